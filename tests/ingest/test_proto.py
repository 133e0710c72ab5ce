"""The shipped protos: wire-identical to TensorBoard's, coexisting with them, Django-free."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]

PAIRS = {
    "event": "tensorboard.compat.proto.event_pb2",
    "summary": "tensorboard.compat.proto.summary_pb2",
    "histogram": "tensorboard.compat.proto.histogram_pb2",
    "tensor": "tensorboard.compat.proto.tensor_pb2",
    "tensor_shape": "tensorboard.compat.proto.tensor_shape_pb2",
    "types": "tensorboard.compat.proto.types_pb2",
    "resource_handle": "tensorboard.compat.proto.resource_handle_pb2",
    "hparams_api": "tensorboard.plugins.hparams.api_pb2",
    "hparams_plugin_data": "tensorboard.plugins.hparams.plugin_data_pb2",
    "text_plugin_data": "tensorboard.plugins.text.plugin_data_pb2",
    "pr_curve_plugin_data": "tensorboard.plugins.pr_curve.plugin_data_pb2",
    "image_plugin_data": "tensorboard.plugins.image.plugin_data_pb2",
    "audio_plugin_data": "tensorboard.plugins.audio.plugin_data_pb2",
    "scalar_plugin_data": "tensorboard.plugins.scalar.plugin_data_pb2",
    "histogram_plugin_data": "tensorboard.plugins.histogram.plugin_data_pb2",
}


def _normalised(fd) -> descriptor_pb2.FileDescriptorProto:
    """Descriptor with names/packages/paths/options stripped: what defines the wire format."""
    p = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(p)
    text = p.SerializeToString()
    p = descriptor_pb2.FileDescriptorProto.FromString(text)
    p.ClearField("name")
    p.ClearField("package")
    p.ClearField("dependency")
    p.ClearField("public_dependency")
    p.ClearField("options")
    p.ClearField("source_code_info")

    def fix_messages(msgs):
        for m in msgs:
            for f in m.field:
                f.type_name = f.type_name.rsplit(".", 1)[-1]
            fix_messages(m.nested_type)

    fix_messages(p.message_type)
    return p


@pytest.mark.parametrize("ours", sorted(PAIRS))
def test_wire_compatible_with_tensorboard(ours):
    mine = importlib.import_module(f"tracker.ingest.proto.{ours}_pb2").DESCRIPTOR
    theirs = importlib.import_module(PAIRS[ours]).DESCRIPTOR
    assert mine.name == f"tracker/ingest/proto/{ours}.proto"
    assert mine.package.startswith("tracker_tb")
    assert _normalised(mine) == _normalised(theirs)


def test_coexists_with_tensorboard_in_one_process():
    code = (
        "import tensorboard.compat.proto.event_pb2 as tb\n"
        "import tensorboardX.proto.event_pb2 as tbx\n"
        "from tracker.ingest.proto import event_pb2, hparams_plugin_data_pb2\n"
        "e = event_pb2.Event(step=3, wall_time=1.5)\n"
        "e.summary.value.add(tag='x', simple_value=2.0)\n"
        "b = e.SerializeToString()\n"
        "assert tb.Event.FromString(b).summary.value[0].simple_value == 2.0\n"
        "assert event_pb2.Event.FromString(tb.Event.FromString(b).SerializeToString()) == e\n"
        "assert event_pb2.Event.DESCRIPTOR.full_name == 'tracker_tb.Event'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    # and in the reverse import order
    code2 = "\n".join(reversed(code.splitlines()[:3])) + "\n"
    subprocess.run([sys.executable, "-c", code2], check=True, cwd=REPO)


def test_ingest_modules_do_not_import_django_or_tensorflow():
    """Load our modules with stub parent packages (tracker/__init__ is not ours and may set
    up Celery/Django) and check what they pull in."""
    code = f"""
import sys, types
for name, path in (("tracker", {str(REPO / "tracker")!r}), ("tracker.ingest", {str(REPO / "tracker/ingest")!r})):
    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m
import tracker.ingest.tfevents, tracker.ingest.summaries, tracker.ingest.logdir
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("django", "tensorflow", "tensorboard", "tensorboardX", "torch", "celery"))
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
