import logging

import numpy as np
import pytest
import torch
from conftest import metric_series
from tracker_client import Run
from tracker_client.integrations.keras import TrackerCallback
from tracker_client.integrations.torch import SummaryWriter
from tracker_client.journal import Journal, list_journal_dirs


def offline_run(closed_port_url, **kw):
    return Run(project="ws/p", url=closed_port_url, offline=True, telemetry=False, **kw)


def journal_contents():
    """Everything the finished offline run journaled, decoded by kind."""
    (directory,) = list_journal_dirs()
    journal = Journal(directory)
    out: dict = {
        "metrics": {},
        "params": {},
        "images": [],
        "text": [],
        "histograms": [],
        "pr_curves": [],
        "patch": [],
    }
    for record in journal:
        if (series_list := metric_series(record)) is not None:
            for s in series_list:
                out["metrics"].setdefault(s["key"], []).extend(
                    zip(s["steps"], s["values"], s["wall_times"], strict=True)
                )
        elif record.kind == "params":
            out["params"].update(record.json_body()["params"])
        elif record.kind == "images":
            out["images"].extend(record.json_body())
        elif record.kind in ("text", "histograms", "pr_curves"):
            out[record.kind].extend(record.json_body()["items"])
        elif record.kind == "patch":
            out["patch"].append(record.json_body())
    journal.close(remove_if_empty=False)
    return out


class FakeOptimizer:
    def get_config(self):
        return {
            "name": "adam",
            "learning_rate": np.float32(0.001),
            "beta_1": 0.9,
            "schedule": {"class_name": "Exp", "config": {"decay": 0.5}},
            "clipnorm": None,
            "weird": [1, 2],
        }


class FakeModel:
    name = "tiny_cnn"
    optimizer = FakeOptimizer()

    def count_params(self):
        return 1234


def test_keras_callback_without_tensorflow(closed_port_url):
    import tracker_client

    run = tracker_client.init(project="ws/p", url=closed_port_url, offline=True, telemetry=False)
    cb = TrackerCallback(
        log_batch_every=2, confusion_matrix_fn=lambda epoch, logs: np.eye(3, dtype=np.float32)
    )
    cb.set_model(FakeModel())
    cb.set_params({"epochs": 2, "steps": 4, "verbose": 1})
    cb.on_train_begin()
    for epoch in range(2):
        for batch in range(4):
            cb.on_train_batch_end(batch, {"loss": np.float32(1.0 / (batch + 1)), "acc": 0.5})
        cb.on_epoch_end(
            epoch, {"loss": 0.5 - epoch * 0.1, "val_loss": np.float64(0.6), "per_class": np.ones(3)}
        )
    cb.on_train_end()
    run.finish()
    got = journal_contents()
    params = got["params"]
    assert params["optimizer/name"] == "adam"
    assert params["optimizer/learning_rate"] == pytest.approx(0.001)
    assert params["optimizer/schedule/config/decay"] == 0.5
    assert params["optimizer/weird"] == "[1, 2]"
    assert params["model/name"] == "tiny_cnn" and params["model/num_params"] == 1234
    assert params["fit/epochs"] == 2
    assert [p[:2] for p in got["metrics"]["loss"]] == [(0, 0.5), (1, 0.4)]
    assert [p[0] for p in got["metrics"]["val_loss"]] == [0, 1]
    assert "per_class" not in got["metrics"]
    assert [p[0] for p in got["metrics"]["batch/loss"]] == [0, 2, 4, 6]
    assert [(i["key"], i["step"]) for i in got["images"]] == [
        ("confusion_matrix", 0),
        ("confusion_matrix", 1),
    ]


def test_keras_callback_needs_a_run():
    cb = TrackerCallback()
    with pytest.raises(RuntimeError, match="init"):
        cb.on_epoch_end(0, {"loss": 1.0})


def test_summary_writer_api(closed_port_url, caplog):
    run = offline_run(closed_port_url)
    writer = SummaryWriter(run=run)
    with writer:
        for step in range(3):
            writer.add_scalar(
                "Loss/train", torch.tensor(1.0 / (step + 1)), step, walltime=1000.0 + step
            )
        writer.add_scalar("auto", 1.0)
        writer.add_scalar("auto", 2.0)  # no step: next step for this tag, not step 0 again
        writer.add_scalars("run_14h", {"xsinx": 1.0, "xcosx": 2.0}, 5)
        writer.add_image("img", torch.rand(3, 8, 10), 1)
        writer.add_image("img_hwc", np.zeros((8, 10, 3), dtype=np.uint8), 1, dataformats="HWC")
        writer.add_images("batch", torch.rand(10, 1, 4, 4), 2)
        writer.add_histogram("weights", torch.randn(1000), 3)
        writer.add_histogram("int_bins", np.arange(100), 3, bins=10)
        writer.add_text("notes", "hello **world**", 4)
        writer.add_hparams({"lr": 0.1, "opt": "sgd", "layers": [1, 2]}, {"hparam/acc": 0.9})
        labels = np.random.default_rng(0).integers(0, 2, 100)
        writer.add_pr_curve(
            "pr", labels, np.random.default_rng(1).random(100), 6, num_thresholds=11
        )
        with caplog.at_level(logging.WARNING, logger="tracker_client"):
            writer.add_graph(object())
            writer.add_graph(object())
        assert caplog.text.count("add_graph is not supported") == 1
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(1, 1), dpi=20)
        writer.add_figure("fig", fig, 7)
        assert not plt.fignum_exists(fig.number)  # closed like TensorBoard's writer does
    assert run.status == "running"
    run.finish()
    got = journal_contents()
    m = got["metrics"]
    assert m["Loss/train"][0] == (0, 1.0, 1000.0)
    assert [p[0] for p in m["auto"]] == [0, 1]
    assert m["run_14h/xsinx"][0][:2] == (5, 1.0) and "run_14h/xcosx" in m
    assert m["hparam/acc"][0][:2] == (0, 0.9)
    assert got["params"] == {"lr": 0.1, "opt": "sgd", "layers": "[1, 2]"}
    assert {(i["key"], i["step"]) for i in got["images"]} == {
        ("img", 1),
        ("img_hwc", 1),
        ("batch", 2),
        ("fig", 7),
    }
    (notes,) = got["text"]
    assert notes == {
        "key": "notes",
        "step": 4,
        "value": "hello **world**",
        "wall_time": notes["wall_time"],
    }
    hist = {h["key"]: h for h in got["histograms"]}
    assert sum(hist["weights"]["bucket_counts"]) == hist["weights"]["num"] == 1000
    assert len(hist["weights"]["bucket_limits"]) == len(hist["weights"]["bucket_counts"])
    assert hist["int_bins"]["bucket_counts"] == [10] * 10
    assert hist["int_bins"]["min"] == 0 and hist["int_bins"]["max"] == 99
    assert hist["int_bins"]["sum_squares"] == float(sum(i * i for i in range(100)))
    (pr,) = got["pr_curves"]
    assert pr["key"] == "pr" and pr["step"] == 6
    assert all(
        len(pr[k]) == 11 for k in ("precision", "recall", "thresholds", "tp", "fp", "tn", "fn")
    )
    assert pr["tp"][0] == float(labels.sum())  # threshold 0: every positive is predicted
    assert pr["recall"][0] == pytest.approx(1.0)
    # a borrowed run is not finished by the writer: the only status change is our finish()
    assert got["patch"] == [{"status": "finished"}]


def test_summary_writer_owns_its_run_when_given_a_project(closed_port_url, monkeypatch):
    monkeypatch.setenv("TRACKER_URL", closed_port_url)
    monkeypatch.setenv("TRACKER_TOKEN", "t")
    monkeypatch.setenv("TRACKER_OFFLINE_GRACE", "0.1")
    writer = SummaryWriter(log_dir="runs/exp1", project="ws/p")
    assert writer.get_logdir() == "runs/exp1"
    assert writer.run.name == "exp1"
    writer.add_scalar("x", 1.0, 0)
    writer.close()
    assert writer.run.status == "finished"


def test_histogram_matches_tensorboard_bucketing():
    from tracker_client.summaries import histogram_item

    item = histogram_item("h", np.array([0.0, 1.0, 1.0, 2.5, -3.0]), 0, 1.0)
    assert sum(item["bucket_counts"]) == 5
    assert item["min"] == -3.0 and item["max"] == 2.5
    limits = item["bucket_limits"]
    assert limits == sorted(limits)
    empty = histogram_item("h", np.array([]), 0, 1.0)
    assert empty["num"] == 0 and empty["bucket_counts"] == []
