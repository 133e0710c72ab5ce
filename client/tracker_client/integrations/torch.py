"""A drop-in for `torch.utils.tensorboard.SummaryWriter` that logs to Tracker.

    from tracker_client.integrations.torch import SummaryWriter
    writer = SummaryWriter(project="acme/vision", name="resnet")   # or run=an existing Run
    writer.add_scalar("loss/train", loss, global_step=step)

Differences from TensorBoard's writer, by design:
* Tags are sanitized to Tracker's key charset (invalid characters become `_`).
* `global_step=None` means "next step for this tag" (TensorBoard writes step 0 each time, which
  would overwrite under Tracker's last-write-wins per (series, step)).
* `add_images` tiles the batch into one grid image (8 per row, 2 px padding, like torchvision's
  make_grid) logged under the tag itself.
* `add_hparams` logs params and metrics into this run instead of creating a sub-run.
* `add_graph`, `add_embedding`, `add_audio`, `add_video`, `add_mesh` and `add_custom_scalars`
  are accepted and ignored (one warning each).
* `log_dir`, `purge_step`, `max_queue`, `flush_secs` and `filename_suffix` are accepted for
  compatibility; nothing is written to disk.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import media
from .._values import coerce_step, coerce_value, sanitize_key
from ..run import Run, current_run
from ..summaries import histogram_item, pr_curve_item, pr_curve_raw_item
from .keras import lenient_params

logger = logging.getLogger("tracker_client")

_UNSUPPORTED = (
    "add_graph",
    "add_embedding",
    "add_audio",
    "add_video",
    "add_mesh",
    "add_custom_scalars",
    "add_custom_scalars_multilinechart",
    "add_custom_scalars_marginchart",
    "add_onnx_graph",
)


def _numpy(value: Any) -> Any:
    import numpy as np

    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:
            return value.float().numpy()
    return np.asarray(value)


def to_hwc(array: Any, dataformats: str) -> Any:
    """Reorder an image array given in `dataformats` (letters of C, H, W) to HWC."""
    import numpy as np

    fmt = dataformats.upper()
    if sorted(fmt) not in (sorted("HW"), sorted("CHW")) or len(set(fmt)) != len(fmt):
        raise ValueError(f"unsupported dataformats {dataformats!r}")
    if array.ndim != len(fmt):
        raise ValueError(f"image has {array.ndim} dims but dataformats is {dataformats!r}")
    if "C" not in fmt:
        array = array[..., None]
        fmt += "C"
    array = np.transpose(array, [fmt.index(c) for c in "HWC"])
    if array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def to_nhwc(array: Any, dataformats: str) -> Any:
    import numpy as np

    fmt = dataformats.upper()
    if sorted(fmt) not in (sorted("NHW"), sorted("NCHW")) or len(set(fmt)) != len(fmt):
        raise ValueError(f"unsupported dataformats {dataformats!r}")
    if array.ndim != len(fmt):
        raise ValueError(f"images have {array.ndim} dims but dataformats is {dataformats!r}")
    if "C" not in fmt:
        array = array[..., None]
        fmt += "C"
    return np.transpose(array, [fmt.index(c) for c in "NHWC"])


class SummaryWriter:
    """TensorBoard-compatible writer backed by a Tracker run."""

    def __init__(
        self,
        log_dir: str | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: int = 120,
        filename_suffix: str = "",
        *,
        project: str | None = None,
        run: Run | None = None,
        name: str | None = None,
    ) -> None:
        if log_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = str(Path("runs") / f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = log_dir
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self._steps: dict[str, int] = {}
        self._warned: set[str] = set()
        self._closed = False
        existing = current_run()
        if run is not None:
            self.run, self._owns_run = run, False
        elif project is None and name is None and existing is not None:
            self.run, self._owns_run = existing, False
        else:
            self.run = Run(project=project, name=name or Path(log_dir).name)
            self._owns_run = True

    # -- helpers ---------------------------------------------------------------------------

    def _step(self, tag: str, global_step: Any) -> int:
        step = self._steps.get(tag, -1) + 1 if global_step is None else coerce_step(global_step)
        if step > self._steps.get(tag, -1):
            self._steps[tag] = step
        return step

    @staticmethod
    def _wall(walltime: float | None) -> float:
        return time.time() if walltime is None else float(walltime)

    def get_logdir(self) -> str:
        return self.log_dir

    # -- scalars ---------------------------------------------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        key = sanitize_key(tag)
        self.run.log_at(
            {key: coerce_value(scalar_value, key)},
            self._step(key, global_step),
            self._wall(walltime),
        )

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        step = self._step(sanitize_key(main_tag), global_step)
        values = {
            sanitize_key(f"{main_tag}/{tag}"): coerce_value(value, tag)
            for tag, value in tag_scalar_dict.items()
        }
        self.run.log_at(values, step, self._wall(walltime))

    # -- images ----------------------------------------------------------------------------

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        key = sanitize_key(tag)
        image = to_hwc(_numpy(img_tensor), dataformats)
        self.run.log_image(
            key, image, step=self._step(key, global_step), wall_time=self._wall(walltime)
        )

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        key = sanitize_key(tag)
        batch = to_nhwc(_numpy(img_tensor), dataformats)
        grid = media.make_grid(batch, nrow=8, padding=2)
        if grid.shape[2] == 1:
            grid = grid[:, :, 0]
        self.run.log_image(
            key, grid, step=self._step(key, global_step), wall_time=self._wall(walltime)
        )

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        key = sanitize_key(tag)
        step = self._step(key, global_step)
        figures = figure if isinstance(figure, list | tuple) else [figure]
        for index, fig in enumerate(figures):
            sub_key = key if len(figures) == 1 else sanitize_key(f"{tag}/{index}")
            self.run.log_image(sub_key, fig, step=step, wall_time=self._wall(walltime))
            if close:
                try:
                    import matplotlib.pyplot as plt

                    plt.close(fig)
                except Exception as exc:  # not a pyplot-managed figure
                    logger.debug("tracker: could not close figure: %s", exc)

    # -- distributions, text, hparams, pr curves --------------------------------------------

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        key = sanitize_key(tag)
        item = histogram_item(
            key, values, self._step(key, global_step), self._wall(walltime), bins, max_bins
        )
        self.run.log_histogram_item(item)

    def add_histogram_raw(
        self,
        tag: str,
        min: float,  # noqa: A002 - TensorBoard's parameter names
        max: float,  # noqa: A002
        num: int,
        sum: float,  # noqa: A002
        sum_squares: float,
        bucket_limits: Any,
        bucket_counts: Any,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        key = sanitize_key(tag)
        limits = [float(x) for x in _numpy(bucket_limits).reshape(-1)]
        counts = [float(x) for x in _numpy(bucket_counts).reshape(-1)]
        if len(limits) != len(counts):
            raise ValueError("len(bucket_limits) != len(bucket_counts)")
        from .._values import json_float

        self.run.log_histogram_item(
            {
                "key": key,
                "step": self._step(key, global_step),
                "wall_time": self._wall(walltime),
                "bucket_limits": [json_float(x) for x in limits],
                "bucket_counts": counts,
                "min": float(min),
                "max": float(max),
                "num": int(num),
                "sum": float(sum),
                "sum_squares": float(sum_squares),
            }
        )

    def add_text(
        self,
        tag: str,
        text_string: str,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        key = sanitize_key(tag)
        self.run.log_text(
            key, str(text_string), step=self._step(key, global_step), wall_time=self._wall(walltime)
        )

    def add_hparams(
        self,
        hparam_dict: Mapping[str, Any],
        metric_dict: Mapping[str, Any],
        hparam_domain_discrete: Mapping[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        if hparam_dict:
            self.run.log_params(lenient_params(hparam_dict, ""))
        values = {sanitize_key(k): coerce_value(v, k) for k, v in (metric_dict or {}).items()}
        if values:
            step = 0 if global_step is None else coerce_step(global_step)
            self.run.log_at(values, step, time.time())

    def add_pr_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        key = sanitize_key(tag)
        item = pr_curve_item(
            key,
            labels,
            predictions,
            self._step(key, global_step),
            self._wall(walltime),
            num_thresholds,
            weights,
        )
        self.run.log_pr_curve_item(item)

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: Any,
        false_positive_counts: Any,
        true_negative_counts: Any,
        false_negative_counts: Any,
        precision: Any,
        recall: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        import numpy as np

        key = sanitize_key(tag)
        n = len(_numpy(precision).reshape(-1))
        item = pr_curve_raw_item(
            key,
            self._step(key, global_step),
            self._wall(walltime),
            _numpy(true_positive_counts).reshape(-1),
            _numpy(false_positive_counts).reshape(-1),
            _numpy(true_negative_counts).reshape(-1),
            _numpy(false_negative_counts).reshape(-1),
            _numpy(precision).reshape(-1),
            _numpy(recall).reshape(-1),
            np.linspace(0.0, 1.0, n),
        )
        self.run.log_pr_curve_item(item)

    # -- unsupported -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in _UNSUPPORTED:

            def ignored(*args: Any, **kwargs: Any) -> None:
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning("tracker: SummaryWriter.%s is not supported; ignored", name)

            return ignored
        raise AttributeError(name)

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self) -> None:
        """Block until everything written so far is delivered (or safely journaled)."""
        if not self._closed:
            self.run.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_run:
            self.run.finish()
        else:
            self.run.flush()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._owns_run and not self._closed and exc_type is not None:
            self._closed = True
            self.run.finish("failed")
        else:
            self.close()
