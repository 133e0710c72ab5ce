"""Logdirs written by the real writers (torch.utils.tensorboard, tensorboardX) for upload tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_torch_logdir(root: Path, steps: int = 30) -> Path:
    """One torch run with every kind Tracker imports, plus an add_hparams session."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(7)
    w = SummaryWriter(str(root / "torch_run"))
    for s in range(steps):
        w.add_scalar("train/loss", 1.0 / (s + 1), s)
        value = (
            float("nan") if s == 3 else float("inf") if s == 4 else float("-inf") if s == 5 else s
        )
        w.add_scalar("train/weird", value, s)
        if s % 10 == 0:
            w.add_histogram("weights", rng.normal(size=500), s)
            img = (rng.random((3, 8, 12)) * 255).astype(np.uint8)
            w.add_image("samples", img, s)
            w.add_text("note", f"step {s}: <b>escaped?</b> ünïcode", s)
            w.add_pr_curve("pr", rng.integers(0, 2, 50), rng.random(50), s, num_thresholds=11)
    w.add_hparams({"lr": 0.003, "optimizer": "adam", "layers": 4}, {"hparam/accuracy": 0.91})
    w.close()
    return root / "torch_run"


def write_tbx_logdir(root: Path, steps: int = 25) -> Path:
    """tensorboardX with add_scalars (sub-directory per key) and images/histograms."""
    from tensorboardX import SummaryWriter

    rng = np.random.default_rng(3)
    w = SummaryWriter(str(root / "tbx_run"))
    for s in range(steps):
        w.add_scalar("acc", s / steps, s)
        w.add_scalars("loss", {"train": 1.0 / (s + 1), "val": 2.0 / (s + 1)}, s)
        if s % 8 == 0:
            w.add_histogram("h", rng.normal(size=200), s)
            w.add_image("img", (rng.random((3, 6, 6)) * 255).astype(np.uint8), s)
    w.close()
    return root / "tbx_run"


def write_keras_like(root: Path, steps: int = 20) -> Path:
    """Keras' layout: <run>/train and <run>/validation, merged into one run."""
    from torch.utils.tensorboard import SummaryWriter

    for sub, scale in (("train", 1.0), ("validation", 2.0)):
        w = SummaryWriter(str(root / "keras_run" / sub))
        for s in range(steps):
            w.add_scalar("epoch_loss", scale / (s + 1), s)
        w.close()
    return root / "keras_run"


@pytest.fixture
def torch_logdir(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    write_torch_logdir(root)
    return root


@pytest.fixture
def tbx_logdir(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    write_tbx_logdir(root)
    return root


@pytest.fixture
def keras_logdir(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    write_keras_like(root)
    return root
