"""Keras callback that logs a `fit()` to Tracker.

    from tracker_client.integrations.keras import TrackerCallback
    model.fit(x, y, epochs=10, callbacks=[TrackerCallback(log_batch_every=100)])

Importable without TensorFlow/Keras: the class then derives from a stand-in with the same hook
methods, so code (and tests) that only construct or type-check the callback keep working.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._values import coerce_value, sanitize_key
from ..run import Run, current_run

logger = logging.getLogger("tracker_client")


class _CallbackBase:
    """Stand-in for keras.callbacks.Callback when Keras is not installed."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_train_end(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_test_end(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None: ...


def _keras_callback_base() -> type:
    for module_name in ("keras", "tf_keras", "tensorflow.keras"):
        root = module_name.split(".", 1)[0]
        if importlib.util.find_spec(root) is None:
            continue
        try:
            module = importlib.import_module(module_name)
            return module.callbacks.Callback
        except Exception as exc:  # broken installs must not break `import tracker_client...`
            logger.debug("tracker: cannot use %s: %s", module_name, exc)
    return _CallbackBase


KERAS_CALLBACK_BASE: type = _keras_callback_base()


def lenient_params(config: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Flatten a framework config into valid params, stringifying what is not a scalar."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        full = sanitize_key(f"{prefix}/{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            out.update(lenient_params(value, full))
        elif value is None or isinstance(value, bool | int | float | str):
            out[full] = value
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            out[full] = value.item()
        else:
            out[full] = str(value)[:1000]
    return out


def numeric_logs(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float | int]:
    """The numeric entries of a Keras `logs` dict, keys made valid."""
    out: dict[str, float | int] = {}
    for key, value in (logs or {}).items():
        try:
            out[sanitize_key(prefix + str(key))] = coerce_value(value, key)
        except TypeError:
            continue  # non-scalar entries (e.g. per-class arrays) are not metrics
    return out


class TrackerCallback(KERAS_CALLBACK_BASE):  # type: ignore[misc, valid-type]
    """Logs optimizer params at train begin, epoch metrics (step = epoch), optionally batch
    metrics every `log_batch_every` batches (keys `batch/<name>`, step = global batch index),
    and an image from `confusion_matrix_fn(epoch, logs)` at each epoch end."""

    def __init__(
        self,
        run: Run | None = None,
        log_batch_every: int = 0,
        confusion_matrix_fn: Callable[[int, dict[str, Any]], Any] | None = None,
        *,
        image_key: str = "confusion_matrix",
    ) -> None:
        super().__init__()
        if log_batch_every < 0:
            raise ValueError("log_batch_every must be >= 0")
        self._run_arg = run
        self.log_batch_every = int(log_batch_every)
        self.confusion_matrix_fn = confusion_matrix_fn
        self.image_key = image_key
        self._global_batch = 0

    @property
    def run(self) -> Run:
        run = self._run_arg or current_run()
        if run is None:
            raise RuntimeError(
                "TrackerCallback has no run: call tracker_client.init() first or pass run="
            )
        return run

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        params: dict[str, Any] = {}
        model = getattr(self, "model", None)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "get_config"):
            try:
                params.update(lenient_params(optimizer.get_config(), "optimizer"))
            except Exception as exc:
                logger.debug("tracker: optimizer config unavailable: %s", exc)
        if model is not None:
            name = getattr(model, "name", None)
            if name:
                params["model/name"] = str(name)
            try:
                params["model/num_params"] = int(model.count_params())
            except Exception as exc:  # unbuilt models cannot count their params
                logger.debug("tracker: model.count_params() failed: %s", exc)
        fit_params = getattr(self, "params", None) or {}
        params.update(lenient_params({k: v for k, v in fit_params.items() if v is not None}, "fit"))
        if params:
            self.run.log_params(params)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        run = self.run
        values = numeric_logs(logs)
        if values:
            run.log(values, step=int(epoch))
        if self.confusion_matrix_fn is not None:
            try:
                image = self.confusion_matrix_fn(int(epoch), dict(logs or {}))
                if image is not None:
                    run.log_image(self.image_key, image, step=int(epoch))
            except Exception as exc:  # a plotting bug must not kill a long training job
                logger.warning("tracker: confusion_matrix_fn failed at epoch %s: %s", epoch, exc)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._global_batch
        self._global_batch += 1
        if self.log_batch_every and step % self.log_batch_every == 0:
            values = numeric_logs(logs, prefix="batch/")
            if values:
                self.run.log_at(values, step, time.time())
