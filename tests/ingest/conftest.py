"""Shared fixtures for the pure ingest tests: logdirs written by the real writers.

torch.utils.tensorboard and tensorboardX are test-only dependencies; TensorFlow is not a
dependency at all, its output is committed under fixtures/tf (see make_tf_fixtures.py).
These fixtures never touch the database.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TF_FIXTURES = FIXTURES / "tf"

SCALAR_VALUES = [
    0.0,
    -0.0,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e-45,
    3.4e38,
    123456789.123,
    -2.0,
]


def _audio_clip() -> np.ndarray:
    t = np.linspace(0, 1, 800, dtype=np.float32)
    return np.sin(2 * math.pi * 440 * t).astype(np.float32)


class _TinyNet:
    """Built lazily so that importing this conftest does not import torch."""

    @staticmethod
    def make():
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = torch.nn.Linear(4, 2)

            def forward(self, x):
                return torch.relu(self.fc(x))

        return Net()


def _write_common(writer, flavour: str) -> None:
    """The same API surface on torch and tensorboardX writers."""
    rng = np.random.default_rng(0)
    for step, v in enumerate(SCALAR_VALUES):
        writer.add_scalar("scalars/float", v, step)
    for step in range(5):
        writer.add_scalar("scalars/int", step * 3, step)
        writer.add_scalar("scalars/np_f64", np.float64(1 / 3 + step), step)
        writer.add_scalars("loss", {"train": 1.0 / (step + 1), "val": 2.0 / (step + 1)}, step)
    writer.add_scalar("scalars/walltime", 1.0, 0, walltime=1234567890.5)
    writer.add_scalar("dup/step", 1.0, 7)
    writer.add_scalar("dup/step", 2.0, 7)
    if flavour == "torch":
        for step in range(3):
            writer.add_scalar("scalars/new_style", 0.25 * step, step, new_style=True)
            writer.add_scalar(
                "scalars/double", 1 / 3 + step, step, new_style=True, double_precision=True
            )
    img = rng.random((3, 8, 6)).astype(np.float32)
    writer.add_image("img/chw", img, 0)
    writer.add_image(
        "img/hwc", (rng.random((5, 7, 3)) * 255).astype(np.uint8), 1, dataformats="HWC"
    )
    writer.add_images("img/batch", rng.random((4, 3, 6, 6)).astype(np.float32), 0)
    for step in range(3):
        writer.add_histogram("hist/normal", rng.normal(size=500), step)
    writer.add_histogram("hist/constant", np.ones(10), 0)
    writer.add_text("text/note", "hello **world** ünïcode", 0)
    writer.add_text("text/note", "second", 1)
    labels = rng.integers(0, 2, 50)
    preds = rng.random(50)
    writer.add_pr_curve("pr/curve", labels, preds, 0, num_thresholds=11)
    if flavour == "torch":  # tensorboardX's add_audio needs the optional `soundfile` package
        writer.add_audio("audio/tone", _audio_clip(), 0, sample_rate=8000)
    writer.add_embedding(rng.random((10, 5)), metadata=[str(i) for i in range(10)], tag="emb")
    try:
        import torch

        writer.add_graph(_TinyNet.make(), torch.zeros(1, 4))
    except Exception as exc:  # pragma: no cover - depends on the writer's graph support
        warnings.warn(f"{flavour} add_graph failed: {exc}", stacklevel=1)
    writer.add_hparams(
        {"lr": 0.01, "opt": "adam", "bn": True, "layers": 3},
        {"hparam/accuracy": 0.9, "hparam/loss": 0.1},
    )
    writer.flush()


@pytest.fixture(scope="session")
def torch_logdir(tmp_path_factory) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("torch_logdir")
    run = root / "run one ü"
    writer = SummaryWriter(log_dir=str(run))
    _write_common(writer, "torch")
    writer.close()
    # A "crashed and resumed" job: a second writer on the same logdir with purge_step.
    first = SummaryWriter(log_dir=str(root / "resumed"))
    for step in range(10):
        first.add_scalar("loss", float(step), step)
        first.add_histogram("h", np.arange(step + 1, dtype=np.float64), step)
    first.close()
    import time

    time.sleep(1.1)  # a new file name (second resolution timestamp)
    second = SummaryWriter(log_dir=str(root / "resumed"), purge_step=5)
    for step in range(5, 8):
        second.add_scalar("loss", 100.0 + step, step)
    second.close()
    return root


@pytest.fixture(scope="session")
def tbx_logdir(tmp_path_factory) -> Path:
    from tensorboardX import SummaryWriter

    root = tmp_path_factory.mktemp("tbx_logdir")
    writer = SummaryWriter(logdir=str(root / "tbx run"))
    _write_common(writer, "tensorboardX")
    writer.close()
    return root
