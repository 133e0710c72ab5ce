"""Point-by-point comparison with TensorBoard's own readers on real writer output.

For every TensorBoard run (directory) we read the files with our reader + decoder + purge
logic and with TensorBoard's ``plugin_event_accumulator.EventAccumulator`` (what the
TensorBoard server uses; it converts TF1 summaries to tensors via ``data_compat``) and with
the legacy ``event_accumulator.EventAccumulator`` (TF1 kinds in their original form), both
with every size guidance 0 (keep everything), and require identical results.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format
from tensorboard.backend.event_processing import event_accumulator as legacy_ea
from tensorboard.backend.event_processing import plugin_event_accumulator as plugin_ea
from tensorboard.compat.proto import graph_pb2
from tensorboard.plugins.hparams import plugin_data_pb2 as tb_hparams_pb2
from tensorboard.util import tensor_util

from tracker.ingest.logdir import RestartPurger, tensorboard_view, walk_logdir
from tracker.ingest.summaries import (
    Audio,
    DecodedBatch,
    Graph,
    Histogram,
    HParamsExperiment,
    HParamsSessionEnd,
    HParamsSessionStart,
    Image,
    PRCurve,
    SummaryDecoder,
    Text,
    Unknown,
)
from tracker.ingest.tfevents import RecordReader

TF_FIXTURES = Path(__file__).parent / "fixtures" / "tf"

PLUGINS = [
    "scalars",
    "images",
    "histograms",
    "text",
    "audio",
    "pr_curves",
    "hparams",
    "graphs",
    "graph_keras_model",
    "graph_tagged_run_metadata",
    "graph_run_metadata",
    "graph_run_metadata_graph",
    "custom_scalars",
    "mesh",
    "projector",
]


def bits(x: float) -> bytes:
    return struct.pack("<d", float(x))


def read_ours(logdir: Path, files: tuple[str, ...], semantics: str = "plugin") -> DecodedBatch:
    decoder = SummaryDecoder()
    purger = RestartPurger(semantics=semantics)

    def batches():
        for f in files:
            with open(logdir / f, "rb") as fh:
                reader = RecordReader(fh, final=True)
                for b in reader.batches():
                    yield decoder.decode_records(b)
                assert reader.problems == []

    view = tensorboard_view(batches(), purger)
    assert view.problems == []
    return view


def tb_runs(logdir: Path):
    """Each TensorBoard run = each directory with tfevents files ("dirs" mode)."""
    plans = walk_logdir(logdir, mode="dirs")
    assert plans
    for plan in plans:
        (source,) = plan.sources
        yield source


def items_by_tag(view: DecodedBatch, cls) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for _, it in view.items:
        if isinstance(it, cls):
            out[it.tag].append(it)
    return out


def compare_plugin_accumulator(run_dir: Path, view: DecodedBatch) -> set[str]:
    acc = plugin_ea.EventAccumulator(
        str(run_dir),
        size_guidance={"tensors": 0},
        tensor_size_guidance={p: 0 for p in PLUGINS},
    )
    acc.Reload()
    ours_scalars: dict[str, list] = defaultdict(list)
    for s in view.scalars():
        ours_scalars[s.tag].append(s)
    images = items_by_tag(view, Image)
    hists = items_by_tag(view, Histogram)
    texts = items_by_tag(view, Text)
    audios = items_by_tag(view, Audio)
    prs = items_by_tag(view, PRCurve)
    graphs = items_by_tag(view, Graph)
    unknowns = items_by_tag(view, Unknown)
    hp_items = {
        it.tag: it
        for _, it in view.items
        if isinstance(it, HParamsExperiment | HParamsSessionStart | HParamsSessionEnd)
    }
    seen_plugins: set[str] = set()
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        seen_plugins.add(plugin)
        events = acc.Tensors(tag)
        if plugin == "scalars":
            theirs = [
                (e.step, bits(e.wall_time), bits(tensor_util.make_ndarray(e.tensor_proto).item()))
                for e in events
            ]
            mine = [(s.step, bits(s.wall_time), bits(s.value)) for s in ours_scalars[tag]]
            assert mine == theirs, tag
        elif plugin == "images":
            theirs = []
            for e in events:
                vals = list(e.tensor_proto.string_val)
                w, h = int(vals[0]), int(vals[1])
                for i, blob in enumerate(vals[2:]):
                    theirs.append((e.step, e.wall_time, i, hashlib.sha256(blob).hexdigest(), w, h))
            mine = [
                (
                    x.step,
                    x.wall_time,
                    x.index,
                    hashlib.sha256(x.encoded).hexdigest(),
                    x.width,
                    x.height,
                )
                for x in images[tag]
            ]
            assert mine == theirs, tag
            assert all(x.mime == "image/png" for x in images[tag])
        elif plugin == "histograms":
            assert len(hists[tag]) == len(events), tag
            for h, e in zip(hists[tag], events, strict=True):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                assert (h.step, h.wall_time) == (e.step, e.wall_time)
                got = np.array([h.lefts, h.rights, h.counts], dtype=np.float64).T.reshape(-1, 3)
                np.testing.assert_array_equal(got.astype(arr.dtype), arr.reshape(-1, 3))
        elif plugin == "text":
            assert len(texts[tag]) == len(events), tag
            for t, e in zip(texts[tag], events, strict=True):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                assert (t.step, t.wall_time) == (e.step, e.wall_time)
                if arr.size == 1:
                    assert t.value == arr.reshape(-1)[0].decode()
                    assert t.cells is None
                else:
                    arr2 = arr.reshape(-1, 1) if arr.ndim == 1 else arr
                    assert t.cells == tuple(tuple(c.decode() for c in row) for row in arr2)
        elif plugin == "audio":
            theirs = []
            for e in events:
                arr = tensor_util.make_ndarray(e.tensor_proto).reshape(-1)
                theirs += [(e.step, e.wall_time, hashlib.sha256(b).hexdigest()) for b in arr]
            mine = [
                (a.step, a.wall_time, hashlib.sha256(a.encoded).hexdigest()) for a in audios[tag]
            ]
            assert mine == theirs, tag
            assert all(a.sample_rate and a.sample_rate > 0 for a in audios[tag])
        elif plugin == "pr_curves":
            assert len(prs[tag]) == len(events)
            for p, e in zip(prs[tag], events, strict=True):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                got = np.array([p.tp, p.fp, p.tn, p.fn, p.precision, p.recall])
                np.testing.assert_array_equal(got.astype(arr.dtype), arr)
                assert p.num_thresholds == arr.shape[1]
        elif plugin == "hparams":
            content = acc.PluginTagToContent("hparams")[tag]
            data = tb_hparams_pb2.HParamsPluginData.FromString(content)
            ours = hp_items[tag]
            which = data.WhichOneof("data")
            if which == "session_start_info":
                want = {
                    k: json_format.MessageToDict(v)
                    for k, v in data.session_start_info.hparams.items()
                }
                assert isinstance(ours, HParamsSessionStart)
                assert ours.hparams == want
                assert ours.group_name == data.session_start_info.group_name
                assert ours.start_time == data.session_start_info.start_time_secs
            elif which == "session_end_info":
                assert isinstance(ours, HParamsSessionEnd)
                assert ours.end_time == data.session_end_info.end_time_secs
            else:
                assert isinstance(ours, HParamsExperiment)
                exp = data.experiment
                assert [h.name for h in ours.hparam_infos] == [h.name for h in exp.hparam_infos]
                assert [(m.group, m.tag) for m in ours.metric_infos] == [
                    (m.name.group, m.name.tag) for m in exp.metric_infos
                ]
        elif plugin in ("graphs", "graph_keras_model", "graph_tagged_run_metadata"):
            key = "" if plugin == "graphs" else tag
            kinds = {"graphs": "graph_def", "graph_keras_model": "keras_model"}
            mine = [g.data for g in graphs[key] if g.kind == kinds.get(plugin, "run_metadata")]
            assert mine == [e.tensor_proto.string_val[0] for e in events], tag
        else:
            assert len(unknowns[tag]) == len(events), (tag, plugin)
            assert all(u.plugin_name == plugin for u in unknowns[tag])
    # Nothing of ours is missing on their side.
    their_tags = set(acc.Tags()["tensors"])
    assert set(ours_scalars) <= their_tags
    for group in (images, hists, texts, audios, prs):
        assert set(group) <= their_tags
    return seen_plugins


def compare_legacy_accumulator(run_dir: Path, view: DecodedBatch) -> None:
    """TF1 kinds as TensorBoard's legacy accumulator keeps them (before data_compat)."""
    sg = {k: 0 for k in legacy_ea.DEFAULT_SIZE_GUIDANCE}
    acc = legacy_ea.EventAccumulator(str(run_dir), size_guidance=sg)
    acc.Reload()
    tags = acc.Tags()
    ours_scalars: dict[str, list] = defaultdict(list)
    for s in view.scalars():
        ours_scalars[s.tag].append(s)
    for tag in tags["scalars"]:
        theirs = [(e.step, bits(e.wall_time), bits(e.value)) for e in acc.Scalars(tag)]
        assert [(s.step, bits(s.wall_time), bits(s.value)) for s in ours_scalars[tag]] == theirs
    images = items_by_tag(view, Image)
    for tag in tags["images"]:
        theirs = [
            (e.step, e.wall_time, e.width, e.height, e.encoded_image_string)
            for e in acc.Images(tag)
        ]
        assert [(i.step, i.wall_time, i.width, i.height, i.encoded) for i in images[tag]] == theirs
    hists = items_by_tag(view, Histogram)
    for tag in tags["histograms"]:
        theirs = acc.Histograms(tag)
        assert len(theirs) == len(hists[tag])
        for h, e in zip(hists[tag], theirs, strict=True):
            v = e.histogram_value
            assert (h.step, h.min, h.max, h.num, h.sum, h.sum_squares) == (
                e.step,
                v.min,
                v.max,
                v.num,
                v.sum,
                v.sum_squares,
            )
            assert sum(h.counts) == sum(v.bucket)
    audios = items_by_tag(view, Audio)
    for tag in tags["audio"]:
        theirs = [
            (e.step, e.encoded_audio_string, e.sample_rate, e.content_type) for e in acc.Audio(tag)
        ]
        assert [(a.step, a.encoded, a.sample_rate, a.content_type) for a in audios[tag]] == theirs
    if tags["graph"]:
        ours = [g for _, g in view.items if isinstance(g, Graph) and g.kind == "graph_def"]
        # TensorBoard re-serializes the parsed GraphDef; compare the messages.
        assert ours and graph_pb2.GraphDef.FromString(ours[-1].data) == acc.Graph()
    if tags["meta_graph"]:
        assert any(isinstance(g, Graph) and g.kind == "meta_graph" for _, g in view.items)


def check_logdir(logdir: Path) -> set[str]:
    plugins: set[str] = set()
    for source in tb_runs(logdir):
        run_dir = logdir / source.directory
        plugins |= compare_plugin_accumulator(run_dir, read_ours(logdir, source.files))
        compare_legacy_accumulator(run_dir, read_ours(logdir, source.files, "legacy"))
    return plugins


def test_torch_writer_parity(torch_logdir):
    plugins = check_logdir(torch_logdir)
    assert {"scalars", "images", "histograms", "text", "audio", "pr_curves", "hparams"} <= plugins
    assert "graphs" in plugins  # add_graph


def test_tensorboardx_writer_parity(tbx_logdir):
    plugins = check_logdir(tbx_logdir)
    assert {"scalars", "images", "histograms", "text", "pr_curves", "hparams"} <= plugins


@pytest.mark.parametrize("name", ["tf2_summaries", "tf1_compat", "keras_fit", "hparams"])
def test_tensorflow_fixture_parity(name):
    plugins = check_logdir(TF_FIXTURES / name)
    expected = {
        "tf2_summaries": {"scalars", "images", "histograms", "text", "audio", "pr_curves"},
        "tf1_compat": {"scalars", "images", "histograms", "text", "audio", "graphs"},
        "keras_fit": {"scalars", "histograms", "graph_keras_model"},
        "hparams": {"scalars", "hparams"},
    }[name]
    assert expected <= plugins


def test_torch_special_scalars_exact(torch_logdir):
    """NaN/±inf/-0.0/denormals and float64 values survive bit-exactly."""
    (plan,) = [p for p in walk_logdir(torch_logdir, mode="dirs") if p.path == "run one ü"]
    view = read_ours(torch_logdir, plan.sources[0].files)
    by_tag: dict[str, list] = defaultdict(list)
    for s in view.scalars():
        by_tag[s.tag].append(s)
    floats = [s.value for s in by_tag["scalars/float"]]
    expected = [
        float(np.float32(v))
        for v in [
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
    ]
    assert [bits(v) for v in floats[:3]] == [bits(v) for v in expected[:3]]
    assert np.isnan(floats[3]) and floats[4] == float("inf") and floats[5] == float("-inf")
    assert [bits(v) for v in floats[6:]] == [bits(v) for v in expected[6:]]
    assert [s.value for s in by_tag["scalars/double"]] == [1 / 3 + i for i in range(3)]
    assert [s.value for s in by_tag["scalars/int"]] == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert [s.wall_time for s in by_tag["scalars/walltime"]] == [1234567890.5]
    assert [(s.step, s.value) for s in by_tag["dup/step"]] == [(7, 1.0), (7, 2.0)]


def test_torch_purge_step(torch_logdir):
    """purge_step writes the run's first SessionLog.START: the TensorBoard UI (plugin
    accumulator) keeps everything, the legacy accumulator purges steps >= 5."""
    (plan,) = [p for p in walk_logdir(torch_logdir) if p.path == "resumed"]
    files = plan.sources[0].files
    assert len(files) == 2
    view = read_ours(torch_logdir, files, "legacy")
    loss = [(s.step, s.value) for s in view.scalars() if s.tag == "loss"]
    assert loss == [(i, float(i)) for i in range(5)] + [(i, 100.0 + i) for i in range(5, 8)]
    hist_steps = [it.step for _, it in view.items if isinstance(it, Histogram)]
    assert hist_steps == [0, 1, 2, 3, 4]
    view = read_ours(torch_logdir, files, "plugin")
    loss = [(s.step, s.value) for s in view.scalars() if s.tag == "loss"]
    assert loss == [(i, float(i)) for i in range(10)] + [(i, 100.0 + i) for i in range(5, 8)]
