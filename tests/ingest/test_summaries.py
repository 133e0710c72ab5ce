"""Summary decoding: fast path == protobuf path, dtypes, kinds, per-tag plugin memory."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest

from tracker.ingest.proto import event_pb2, summary_pb2, types_pb2
from tracker.ingest.summaries import (
    DecodedBatch,
    FileVersion,
    Histogram,
    Image,
    Scalar,
    SessionLogEntry,
    SummaryDecoder,
    Text,
    Unknown,
    sniff_image_mime,
)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def scalar_event(tag, value, step, wall=1700000000.25, form="simple", extra_md=None):
    ev = event_pb2.Event(wall_time=wall, step=step)
    v = ev.summary.value.add(tag=tag)
    if form == "simple":
        v.simple_value = value
    else:
        t = v.tensor
        t.tensor_shape.SetInParent()
        if form in ("f32_content", "f32_val"):
            t.dtype = types_pb2.DT_FLOAT
            if form == "f32_content":
                t.tensor_content = struct.pack("<f", value)
            else:
                t.float_val.append(value)
        else:
            t.dtype = types_pb2.DT_DOUBLE
            if form == "f64_content":
                t.tensor_content = struct.pack("<d", value)
            else:
                t.double_val.append(value)
        v.metadata.plugin_data.plugin_name = "scalars"
        if extra_md:
            v.metadata.summary_description = extra_md
    return ev.SerializeToString()


def slow_decode(payloads, offsets) -> DecodedBatch:
    dec = SummaryDecoder()
    out = DecodedBatch()
    for p, o in zip(payloads, offsets, strict=True):
        dec._decode_payload(p, o, out)
    out.events = len(payloads)
    return out


def columns(b: DecodedBatch):
    return (
        b.scalar_tags,
        b.scalar_steps,
        [bits(x) for x in b.scalar_wall_times],
        [bits(x) for x in b.scalar_values],
        b.scalar_offsets,
        [(o, repr(it)) for o, it in b.items],
        b.problems,
    )


def test_fast_path_equals_protobuf_on_varied_layouts():
    rng = random.Random(3)
    tags = ["loss", "a" * 127, "b" * 128, "ü/ñ 漢字", "x", "metrics/accuracy/train"]
    steps = [0, 1, 127, 128, 2**21, 2**35, 2**62, -1, -(2**40)]
    values = [0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"), 1e-45, 3.4e38]
    forms = ["simple", "f32_content", "f32_val", "f64_content", "f64_val"]
    payloads = []
    for _ in range(3000):
        form = rng.choice(forms)
        v = rng.choice(values)
        if form.startswith("f64"):
            v = rng.choice([*values, 1 / 3, 1e300])
        wall = rng.choice([0.0, 1700000000.123, 1.0])
        payloads.append(
            scalar_event(
                rng.choice(tags),
                v,
                rng.choice(steps),
                wall,
                form,
                extra_md=rng.choice([None, None, "described"]),
            )
        )
    # Non-scalar / odd events mixed in.
    ev = event_pb2.Event(wall_time=5.0, step=3, file_version="brain.Event:2")
    payloads.append(ev.SerializeToString())
    ev = event_pb2.Event(wall_time=5.0, step=3)
    ev.summary.value.add(tag="two", simple_value=1.0)
    ev.summary.value.add(tag="values", simple_value=2.0)
    payloads.append(ev.SerializeToString())
    ev = event_pb2.Event(wall_time=5.0, step=3)
    ev.summary.value.add(tag="src", simple_value=1.0)
    ev.source_metadata.writer = "w"
    payloads.append(ev.SerializeToString())
    # Invalid UTF-8 in the tag: protobuf rejects the event; so must the fast path.
    good = scalar_event("abc", 1.0, 5)
    payloads.append(good.replace(b"abc", b"a\xffc"))
    payloads.append(b"\x09" + b"\x00" * 30)  # looks like the layout, is garbage
    rng.shuffle(payloads)
    offsets = list(range(0, len(payloads) * 100, 100))
    fast = SummaryDecoder().decode_batch(payloads, offsets)
    assert columns(fast) == columns(slow_decode(payloads, offsets))
    assert any(p.kind == "bad_event" for p in fast.problems)
    assert len(fast.scalar_values) > 2900


def test_fast_path_really_is_used():
    payloads = [
        scalar_event("t", 1.0, i, form=f)
        for i, f in enumerate(["simple", "f32_content", "f32_val", "f64_val", "f64_content"])
    ]
    dec = SummaryDecoder()

    def boom(*a):
        raise AssertionError("slow path used")

    dec._decode_payload = boom
    out = dec.decode_batch(payloads, [0, 1, 2, 3, 4])
    assert out.scalar_steps == [0, 1, 2, 3, 4]


def test_tag_plugin_is_fixed_by_first_value():
    """TF1 FileWriter strips metadata after a tag's first value (TensorBoard remembers it)."""
    ev1 = event_pb2.Event(wall_time=1, step=1)
    v = ev1.summary.value.add(tag="txt")
    v.metadata.plugin_data.plugin_name = "text"
    v.tensor.dtype = types_pb2.DT_STRING
    v.tensor.string_val.append(b"hello")
    ev2 = event_pb2.Event(wall_time=2, step=2)
    v = ev2.summary.value.add(tag="txt")
    v.tensor.dtype = types_pb2.DT_STRING
    v.tensor.string_val.append(b"again")
    dec = SummaryDecoder()
    out = dec.decode_batch([ev1.SerializeToString()], [0])
    # Resume with persisted state: the plugin is still known.
    state = json.loads(json.dumps(dec.state()))
    out2 = SummaryDecoder(state).decode_batch([ev2.SerializeToString()], [10])
    assert [it.value for _, it in out.items + out2.items] == ["hello", "again"]
    # Without the state the second value is an Unknown (no plugin), like TensorBoard.
    out3 = SummaryDecoder().decode_batch([ev2.SerializeToString()], [10])
    assert isinstance(out3.items[0][1], Unknown)


def test_scalar_tensor_dtypes():
    def tensor_scalar(dtype, **fields):
        ev = event_pb2.Event(wall_time=1.0, step=1)
        v = ev.summary.value.add(tag="s")
        v.metadata.plugin_data.plugin_name = "scalars"
        v.tensor.dtype = dtype
        for k, val in fields.items():
            if k == "tensor_content":
                v.tensor.tensor_content = val
            else:
                getattr(v.tensor, k).extend(val)
        return ev

    dec = SummaryDecoder()
    cases = [
        (tensor_scalar(types_pb2.DT_INT64, int64_val=[2**53 + 1]), float(2**53 + 1)),
        (tensor_scalar(types_pb2.DT_INT32, int_val=[-7]), -7.0),
        (tensor_scalar(types_pb2.DT_UINT8, tensor_content=b"\xff"), 255.0),
        (tensor_scalar(types_pb2.DT_BOOL, bool_val=[True]), 1.0),
        (tensor_scalar(types_pb2.DT_HALF, half_val=[0x3C00]), 1.0),
        (tensor_scalar(types_pb2.DT_HALF, half_val=[0x7E00]), float("nan")),
        (tensor_scalar(types_pb2.DT_BFLOAT16, half_val=[0x3FC0]), 1.5),
        (tensor_scalar(types_pb2.DT_UINT64, uint64_val=[2**64 - 1]), float(2**64 - 1)),
        (tensor_scalar(types_pb2.DT_DOUBLE, double_val=[float("-inf")]), float("-inf")),
    ]
    for ev, want in cases:
        (item,) = dec.decode_event(ev)
        assert isinstance(item, Scalar)
        if np.isnan(want):
            assert np.isnan(item.value)
        else:
            assert item.value == want
    (bad,) = dec.decode_event(tensor_scalar(types_pb2.DT_FLOAT, float_val=[1.0, 2.0]))
    # two values for a rank-0 shape is malformed -> Unknown, never an exception
    assert isinstance(bad, Unknown) and bad.plugin_name == "scalars"


def test_legacy_histogram_like_tensorboard_data_compat():
    from tensorboard.compat.proto import summary_pb2 as tb_summary_pb2
    from tensorboard.data_compat import migrate_value
    from tensorboard.util import tensor_util

    h = summary_pb2.HistogramProto(
        min=-1.5,
        max=2.5,
        num=6,
        sum=3.0,
        sum_squares=9.0,
        bucket_limit=[-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 1.7976931348623157e308],
        bucket=[0, 1, 0, 3, 2, 0, 0],
    )
    ev = event_pb2.Event(wall_time=1.0, step=4)
    ev.summary.value.add(tag="h", histo=h)
    (item,) = SummaryDecoder().decode_event(ev)
    assert isinstance(item, Histogram)
    tb_value = tb_summary_pb2.Summary.Value.FromString(ev.summary.value[0].SerializeToString())
    arr = tensor_util.make_ndarray(migrate_value(tb_value).tensor)
    got = np.array([item.lefts, item.rights, item.counts]).T
    np.testing.assert_array_equal(got.astype(np.float32), arr)
    assert (item.min, item.max, item.num, item.sum, item.sum_squares) == (-1.5, 2.5, 6, 3.0, 9.0)
    ev2 = event_pb2.Event(wall_time=1.0, step=5)
    ev2.summary.value.add(tag="h", histo=summary_pb2.HistogramProto(bucket_limit=[1.0], bucket=[0]))
    (empty,) = SummaryDecoder().decode_event(ev2)
    assert empty.counts == () and empty.num == 0


def test_image_mime_and_size_sniffing():
    import io

    from PIL import Image as PILImage

    for fmt, mime in (
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
    ):
        buf = io.BytesIO()
        PILImage.new("RGB", (13, 7)).save(buf, format=fmt)
        data = buf.getvalue()
        assert sniff_image_mime(data) == mime
        ev = event_pb2.Event(wall_time=1.0, step=1)
        ev.summary.value.add(tag="i").image.encoded_image_string = data  # no width/height
        (item,) = SummaryDecoder().decode_event(ev)
        assert isinstance(item, Image)
        assert (item.mime, item.width, item.height) == (mime, 13, 7)
    assert sniff_image_mime(b"nope") == "application/octet-stream"


def test_text_shapes():
    def text_event(strings, shape):
        ev = event_pb2.Event(wall_time=1.0, step=1)
        v = ev.summary.value.add(tag="t")
        v.metadata.plugin_data.plugin_name = "text"
        v.tensor.dtype = types_pb2.DT_STRING
        for d in shape:
            v.tensor.tensor_shape.dim.add(size=d)
        v.tensor.string_val.extend(s.encode() for s in strings)
        return ev

    dec = SummaryDecoder()
    (a,) = dec.decode_event(text_event(["only"], [1]))
    assert (a.value, a.cells) == ("only", None)
    (b,) = dec.decode_event(text_event(["a", "b"], [2]))
    assert (b.value, b.cells) == ("a\nb", (("a",), ("b",)))
    (c,) = dec.decode_event(text_event(["a", "b", "c", "d", "e", "f", "g", "h"], [2, 2, 2]))
    assert isinstance(c, Text) and c.cells == (("a", "b"), ("c", "d"))


def test_markers_and_graphs_and_unknowns():
    dec = SummaryDecoder()
    evs = [
        event_pb2.Event(step=0, wall_time=1.0, file_version="brain.Event:2"),
        event_pb2.Event(
            step=3,
            wall_time=2.0,
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
        ),
        event_pb2.Event(step=0, wall_time=3.0, graph_def=b"g"),
        event_pb2.Event(step=0, wall_time=3.0, meta_graph_def=b"m"),
        event_pb2.Event(
            step=1,
            wall_time=3.0,
            tagged_run_metadata=event_pb2.TaggedRunMetadata(tag="s", run_metadata=b"r"),
        ),
        event_pb2.Event(step=1, wall_time=3.0),
    ]
    ev = event_pb2.Event(step=2, wall_time=4.0)
    v = ev.summary.value.add(tag="mesh")
    v.metadata.plugin_data.plugin_name = "mesh"
    v.tensor.dtype = types_pb2.DT_FLOAT
    evs.append(ev)
    items = [it for e in evs for it in dec.decode_event(e)]
    assert isinstance(items[0], FileVersion) and items[0].version == "brain.Event:2"
    assert (
        isinstance(items[1], SessionLogEntry) and items[1].status == "START" and items[1].step == 3
    )
    assert [(g.kind, g.tag, g.data) for g in items[2:5]] == [
        ("graph_def", "", b"g"),
        ("meta_graph", "", b"m"),
        ("run_metadata", "s", b"r"),
    ]
    assert isinstance(items[5], Unknown) and not items[5].from_summary
    assert isinstance(items[6], Unknown) and items[6].plugin_name == "mesh"


@pytest.mark.parametrize("n", [1, 5])
def test_decoded_batch_scalars_view(n):
    payloads = [scalar_event("t", float(i), i) for i in range(n)]
    out = SummaryDecoder().decode_batch(payloads, list(range(n)))
    assert [s.value for s in out.scalars()] == [float(i) for i in range(n)]
    assert out.events == n
