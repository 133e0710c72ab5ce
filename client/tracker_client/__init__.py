"""Tracker client: log metrics, params, images, text and artifacts from training code.

    import tracker_client as client
    client.init(project="acme/vision", name="resnet-lr3e-4", params={"lr": 3e-4})
    client.log({"loss": 0.31, "acc": 0.92}, step=100)
    client.log_image("confusion_matrix", fig, step=100)
    client.log_artifact("checkpoints/epoch10.pt")
    client.finish()

The module-level functions act on the current run (the last one `init()` returned). Nothing
here imports Django, numpy, Pillow, matplotlib or torch at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._version import __version__
from .api import Client
from .config import ConfigError
from .http import ApiError, TrackerError, TrackerUnreachable
from .run import Run, current_run, require_run, set_current

__all__ = [
    "ApiError",
    "Client",
    "ConfigError",
    "Run",
    "TrackerError",
    "TrackerUnreachable",
    "__version__",
    "current_run",
    "finish",
    "flush",
    "init",
    "log",
    "log_artifact",
    "log_image",
    "log_metric",
    "log_params",
    "log_text",
    "set_tags",
]


def init(
    project: str | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    run_id: int | str | None = None,
    telemetry: bool = True,
    telemetry_interval: float = 5.0,
    offline: bool = False,
    *,
    notes: str | None = None,
    url: str | None = None,
    token: str | None = None,
) -> Run:
    """Start (or with `run_id`, resume) a run and make it the current run.

    A still-active current run is finished first. `offline=True` never touches the network:
    everything goes to the local journal for `tracker sync`.
    """
    previous = current_run()
    if previous is not None:
        previous.finish()
    run = Run(
        project=project,
        name=name,
        params=params,
        tags=tags,
        run_id=run_id,
        telemetry=telemetry,
        telemetry_interval=telemetry_interval,
        offline=offline,
        notes=notes,
        url=url,
        token=token,
    )
    set_current(run)
    return run


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    """Log `{key: number}` on the current run; step auto-increments when None."""
    require_run().log(data, step)


def log_metric(key: str, value: Any, step: int | None = None) -> None:
    require_run().log_metric(key, value, step)


def log_params(params: Mapping[str, Any]) -> None:
    require_run().log_params(params)


def log_image(key: str, image: Any, step: int | None = None, caption: str | None = None) -> None:
    require_run().log_image(key, image, step=step, caption=caption)


def log_text(key: str, text: str, step: int | None = None) -> None:
    require_run().log_text(key, text, step)


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> list[str]:
    return require_run().log_artifact(path, name)


def set_tags(tags: list[str]) -> None:
    require_run().set_tags(tags)


def flush(timeout: float | None = None) -> bool:
    return require_run().flush(timeout)


def finish(status: str | None = None) -> None:
    """Finish the current run (no-op when there is none)."""
    run = current_run()
    if run is not None:
        run.finish(status)


def download_artifact(path: str, dest: str | os.PathLike[str] = ".") -> Path:
    return require_run().download_artifact(path, dest)
