"""Run discovery, path safety and TensorBoard's purge semantics (vs. both accumulators)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator as legacy_ea
from tensorboard.backend.event_processing import plugin_event_accumulator as plugin_ea

from tracker.ingest.logdir import (
    Purge,
    RestartPurger,
    RunSource,
    UnsafePathError,
    plan_runs,
    safe_relative_path,
    series_key,
    tensorboard_view,
    tfevents_sort_key,
    walk_logdir,
)
from tracker.ingest.proto import event_pb2
from tracker.ingest.summaries import Histogram, SummaryDecoder
from tracker.ingest.tfevents import RecordReader, frame_record

EV = "events.out.tfevents.1700000000.host"


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../x", "a/../../b", "a\\b", "a\x00b", "", ".", "./", "C:/x", "a/..", "//x"],
)
def test_unsafe_paths(path):
    with pytest.raises(UnsafePathError):
        safe_relative_path(path)


def test_safe_paths_normalised():
    assert safe_relative_path("./a//b/./c") == "a/b/c"
    assert safe_relative_path("run 1/ünï/漢字.txt") == "run 1/ünï/漢字.txt"
    assert safe_relative_path("a/..b/c..") == "a/..b/c.."
    with pytest.raises(UnsafePathError):
        plan_runs(["ok/" + EV, "../evil/" + EV])


def test_sort_key_orders_by_timestamp_then_name():
    names = [
        "d/events.out.tfevents.1700000010.h.2",
        "d/events.out.tfevents.999999999.h",
        "d/events.out.tfevents.1700000010.h.10",
        "d/weird.tfevents",
    ]
    assert sorted(names, key=tfevents_sort_key) == [
        "d/events.out.tfevents.999999999.h",
        "d/events.out.tfevents.1700000010.h.10",
        "d/events.out.tfevents.1700000010.h.2",
        "d/weird.tfevents",
    ]


def test_plan_merge_mode():
    files = [
        f"keras/train/{EV}",
        f"keras/validation/{EV}",
        "keras/train/plugins/profile/x.xplane.pb",
        f"torch run/{EV}",
        "torch run/events.out.tfevents.1600000000.host",
        f"torch run/loss_train/{EV}",
        f"torch run/1712345678.123/{EV}",
        "torch run/projector_config.pbtxt",
        "torch run/00000/emb/tensors.tsv",
        "torch run/00000/emb/metadata.tsv",
        f"nested/a/b/{EV}",
        f"nested/c/{EV}",
        f"{EV}",
        "README.md",
        "other/tensors.tsv",
    ]
    plans = {p.path: p for p in plan_runs(files, root_name="mylogs")}
    assert set(plans) == {"."}  # the root holds events, so everything nests into it
    plans = {p.path: p for p in plan_runs(files[:-3] + files[-1:])}
    assert set(plans) == {"keras", "torch run", "nested/a/b", "nested/c"}
    k = plans["keras"]
    assert [(s.directory, s.prefix) for s in k.sources] == [
        ("keras/train", "train"),
        ("keras/validation", "validation"),
    ]
    t = plans["torch run"]
    assert [(s.directory, s.prefix) for s in t.sources] == [
        ("torch run", ""),
        ("torch run/1712345678.123", ""),  # its only add_hparams session: unprefixed
        ("torch run/loss_train", "loss_train"),
    ]
    assert t.sources[0].files == (
        "torch run/events.out.tfevents.1600000000.host",
        f"torch run/{EV}",
    )
    assert t.artifacts == (
        "torch run/00000/emb/metadata.tsv",
        "torch run/00000/emb/tensors.tsv",
        "torch run/projector_config.pbtxt",
    )
    assert plans["keras"].artifacts == ()
    assert series_key("validation", "epoch_loss") == "validation/epoch_loss"
    assert series_key("", "loss") == "loss"


def test_several_add_hparams_sessions_keep_their_prefixes():
    files = [f"r/{EV}", f"r/1712345678.123/{EV}", f"r/1712345999.5/{EV}", f"s/1712345678.9/{EV}"]
    plans = {p.path: p for p in plan_runs(files)}
    assert [s.prefix for s in plans["r"].sources] == ["", "1712345678.123", "1712345999.5"]
    # a directory that only looks like a number but is no timestamp stays prefixed
    assert [s.prefix for s in plan_runs([f"r/{EV}", f"r/1.5/{EV}"])[0].sources] == ["", "1.5"]
    # in dirs mode a session directory is its own run, as in TensorBoard
    assert [p.path for p in plan_runs(files, mode="dirs")] == [
        "r",
        "r/1712345678.123",
        "r/1712345999.5",
        "s/1712345678.9",
    ]


def test_plan_dirs_mode_and_root_name():
    files = [EV, f"train/{EV}", f"a/b/{EV}"]
    plans = plan_runs(files, mode="dirs", root_name="logs")
    assert [(p.path, p.name, [s.prefix for s in p.sources]) for p in plans] == [
        (".", "logs", [""]),
        ("a/b", "a/b", [""]),
        ("train", "train", [""]),
    ]
    merged = plan_runs(files)
    assert [(p.path, p.name) for p in merged] == [(".", ".")]
    assert [s.prefix for s in merged[0].sources] == ["", "a/b", "train"]
    with pytest.raises(ValueError):
        plan_runs(files, mode="bogus")  # type: ignore[arg-type]


def test_walk_logdir(tmp_path):
    root = tmp_path / "my logs"
    (root / "run ü" / "validation").mkdir(parents=True)
    (root / "run ü" / "train").mkdir()
    (root / "run ü" / "train" / EV).write_bytes(b"")
    (root / "run ü" / "validation" / EV).write_bytes(b"")
    (root / "notes.txt").write_text("x")
    (root / "link").symlink_to(root / "run ü")
    plans = walk_logdir(root)
    assert [(p.path, p.name, len(p.sources)) for p in plans] == [("run ü", "run ü", 2)]
    (root / EV).write_bytes(b"")
    assert [(p.path, p.name) for p in walk_logdir(root, mode="dirs")][0] == (".", "my logs")


# ---------------------------------------------------------------------------- purge


def _write(path: Path, events: list[event_pb2.Event]) -> None:
    path.write_bytes(b"".join(frame_record(e.SerializeToString()) for e in events))


def _scalar(step, tag="loss", value=None, wall=None):
    ev = event_pb2.Event(step=step, wall_time=wall if wall is not None else 1000.0 + step)
    ev.summary.value.add(tag=tag, simple_value=float(step if value is None else value))
    return ev


def _start(step):
    return event_pb2.Event(
        step=step,
        wall_time=2000.0 + step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
    )


def _fv(step=0):
    return event_pb2.Event(step=step, wall_time=999.0, file_version="brain.Event:2")


SCENARIOS = {
    # file_version 2, first START is the initial session start (plugin: no purge).
    "v2_one_start": [
        [
            _fv(),
            *[_scalar(i) for i in range(8)],
            _start(4),
            _scalar(4, value=40),
            _scalar(5, value=50),
        ]
    ],
    # two STARTs: the second one purges in both.
    "v2_two_starts": [
        [_fv(), _start(0), *[_scalar(i) for i in range(8)], _start(3), _scalar(3, value=30)],
        [_fv(), _scalar(9), _start(2), _scalar(2, value=20), _scalar(2, "other")],
    ],
    # no file_version: out-of-order steps purge per tag.
    "v1_out_of_order": [
        [
            *[_scalar(i) for i in range(6)],
            *[_scalar(i, "acc") for i in range(6)],
            _scalar(3, value=33),
            _scalar(7, "acc"),
            event_pb2.Event(step=1, wall_time=5.0, graph_def=b"g"),
            _scalar(2, "acc", value=22),
            _scalar(4, value=44),
        ]
    ],
    # no file_version in the first file, then a v2 file.
    "v1_then_v2": [
        [*[_scalar(i) for i in range(5)], _scalar(2, value=22)],
        [_fv(), _start(1), _scalar(1, value=11), _start(1), _scalar(1, value=111)],
    ],
    "duplicates_kept": [[_fv(), _scalar(1), _scalar(1, value=2), _scalar(1, value=3)]],
}


def _tb_scalars(run_dir: Path, semantics: str) -> dict[str, list[tuple[int, float]]]:
    if semantics == "plugin":
        acc = plugin_ea.EventAccumulator(
            str(run_dir), size_guidance={"tensors": 0}, tensor_size_guidance={"scalars": 0}
        )
        acc.Reload()
        from tensorboard.util import tensor_util

        return {
            tag: [
                (e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)
            ]
            for tag in acc.Tags()["tensors"]
            if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        }
    acc = legacy_ea.EventAccumulator(
        str(run_dir), size_guidance={k: 0 for k in legacy_ea.DEFAULT_SIZE_GUIDANCE}
    )
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("semantics", ["plugin", "legacy"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("block_size", [1 << 20, 40])
def test_purge_matches_tensorboard(tmp_path, name, semantics, block_size):
    run = tmp_path / "run"
    run.mkdir()
    for i, events in enumerate(SCENARIOS[name]):
        _write(run / f"events.out.tfevents.{1700000000 + i}.host", events)
    (plan,) = plan_runs([f"run/{p.name}" for p in run.iterdir()])
    (source,) = plan.sources
    decoder = SummaryDecoder()
    purger = RestartPurger(semantics=semantics)
    stored: list[tuple[str, int, float]] = []
    # Streaming use, as the importer does: apply purges to stored data, then store the batch.
    for f in source.files:
        reader = RecordReader((tmp_path / f).read_bytes(), block_size=block_size)
        for rb in reader.batches():
            batch, purges = purger.apply(decoder.decode_records(rb))
            for p in purges:
                stored = [
                    r
                    for r in stored
                    if not (r[1] >= p.min_step and (p.tags is None or r[0] in p.tags))
                ]
            stored += [(s.tag, s.step, s.value) for s in batch.scalars()]
        # persist / restore state between files like a resumed import would
        purger = RestartPurger(json.loads(json.dumps(purger.state())))
        decoder = SummaryDecoder(json.loads(json.dumps(decoder.state())))
    ours: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in stored:
        ours.setdefault(tag, []).append((step, value))
    assert ours == _tb_scalars(run, semantics)


def test_tensorboard_view_and_purge_objects():
    decoder = SummaryDecoder()
    events = [_fv(), _start(0), *[_scalar(i) for i in range(5)], _start(2)]
    payloads = [e.SerializeToString() for e in events]
    offsets = list(range(len(payloads)))
    purger = RestartPurger()
    batch, purges = purger.apply(decoder.decode_batch(payloads, offsets))
    assert purges == [Purge(2, None, 7)]
    assert batch.scalar_steps == [0, 1]
    assert purger.purged == 3
    view = tensorboard_view([SummaryDecoder().decode_batch(payloads, offsets)])
    assert view.scalar_steps == [0, 1]
    assert isinstance(RunSource("a", "", ()), RunSource)


def test_purge_drops_non_scalar_items(tmp_path):
    ev_h = []
    for step in range(4):
        ev = event_pb2.Event(step=step, wall_time=1.0)
        h = ev.summary.value.add(tag="h").histo
        h.min, h.max, h.num = 0.0, 1.0, 1.0
        h.bucket_limit.append(1.0)
        h.bucket.append(1.0)
        ev_h.append(ev)
    events = [_fv(), _start(0), *ev_h, _start(2)]
    view = tensorboard_view(
        [
            SummaryDecoder().decode_batch(
                [e.SerializeToString() for e in events], list(range(len(events)))
            )
        ]
    )
    assert [it.step for _, it in view.items if isinstance(it, Histogram)] == [0, 1]
