"""Logdir upload end to end: real writers → upload API → stored data equals TensorBoard's view."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.ingest_api.conftest import write_keras_like, write_tbx_logdir, write_torch_logdir
from tests.ingest_api.helpers import (
    PROJECT,
    accumulate,
    create_upload,
    logdir_files,
    put_chunk,
    same_points,
    send_files,
    stored_scalars,
    tb_scalars,
    upload_logdir,
)
from tracker.models import (
    Artifact,
    Histogram,
    Image,
    Param,
    PRCurve,
    Run,
    Series,
    SeriesChunk,
    TextEntry,
    UploadChunk,
    UploadFile,
)
from tracker.storage import get_blob_store

TF_FIXTURES = Path(__file__).resolve().parent.parent / "ingest" / "fixtures" / "tf"


def snapshot(project) -> dict:  # type: ignore[no-untyped-def]
    """Everything an import stores for a project, comparable across imports."""
    out: dict = {}
    for run in Run.objects.filter(project=project).order_by("source_path"):
        out[run.source_path] = {
            "name": run.name,
            "scalars": stored_scalars(run),
            "kinds": dict(Series.objects.filter(run=run).values_list("key", "kind")),
            "images": sorted(
                Image.objects.filter(run=run).values_list("key", "step", "index", "blob_id")
            ),
            "histograms": sorted(
                (h.key, h.step, tuple(h.bucket_counts)) for h in Histogram.objects.filter(run=run)
            ),
            "texts": sorted(TextEntry.objects.filter(run=run).values_list("key", "step", "value")),
            "params": dict(Param.objects.filter(run=run).values_list("key", "value")),
            "artifacts": sorted(Artifact.objects.filter(run=run).values_list("path", "sha256")),
        }
    return out


def _nan_safe(snap: dict) -> str:
    return repr(snap).replace("nan", "NaN")


# --- the full protocol against TensorBoard's own reader --------------------------------------------


def test_torch_logdir_matches_tensorboard(tenants, api, torch_logdir):
    job = upload_logdir(api(tenants.bob), torch_logdir)
    assert job["state"] == "succeeded", job
    assert job["problems"] == []
    assert job["project_url"].endswith("/acme/vision")
    run = Run.objects.get(project=tenants.vision, source_path="torch_run")
    assert run.source == "upload" and run.name == "torch_run"
    assert Run.objects.filter(project=tenants.vision).count() == 1  # hparams session merged

    # Scalars, point by point (NaN and ±inf included).
    hp_dir = next(p for p in (torch_logdir / "torch_run").iterdir() if p.is_dir())
    theirs = tb_scalars(torch_logdir / "torch_run")
    # a run's single add_hparams session merges unprefixed (tracker/ingest/logdir.py)
    theirs.update(tb_scalars(hp_dir))
    ours = stored_scalars(run)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        same_points(ours[key], theirs[key])
    weird = [v for _, _, v in ours["train/weird"][3:6]]
    assert math.isnan(weird[0]) and weird[1] == math.inf and weird[2] == -math.inf
    assert job["summary"]["points"] == sum(len(v) for v in theirs.values())
    assert job["summary"]["runs"] == 1

    acc = accumulate(torch_logdir / "torch_run")
    # Images: same bytes (sha256), same size.
    store = get_blob_store()
    tb_images = acc.Images("samples")
    rows = list(Image.objects.filter(run=run, key="samples").order_by("step"))
    assert [r.step for r in rows] == [e.step for e in tb_images]
    for row, event in zip(rows, tb_images, strict=True):
        assert row.blob_id == hashlib.sha256(event.encoded_image_string).hexdigest()
        assert store.read_bytes(row.blob_id) == event.encoded_image_string
        assert (row.width, row.height, row.mime) == (event.width, event.height, "image/png")
    assert job["summary"]["images"] == len(tb_images)

    # Histograms: TensorBoard's buckets (empty outer buckets trimmed, like its display).
    tb_hist = acc.Histograms("weights")
    hrows = list(Histogram.objects.filter(run=run, key="weights").order_by("step"))
    assert [h.step for h in hrows] == [e.step for e in tb_hist]
    for row, event in zip(hrows, tb_hist, strict=True):
        hv = event.histogram_value
        counts = list(hv.bucket)
        lo = next(i for i, c in enumerate(counts) if c > 0)
        hi = max(i for i, c in enumerate(counts) if c > 0)
        assert row.bucket_counts == counts[lo : hi + 1]
        assert row.bucket_limits == [*hv.bucket_limit[lo:hi], hv.max]
        assert (row.min, row.max, row.num, row.sum) == (hv.min, hv.max, hv.num, hv.sum)

    # Text (torch adds "/text_summary" to the tag).
    tb_text = acc.Tensors("note/text_summary")
    texts = list(TextEntry.objects.filter(run=run, key="note/text_summary").order_by("step"))
    assert [(t.step, t.value) for t in texts] == [
        (e.step, e.tensor_proto.string_val[0].decode()) for e in tb_text
    ]

    # PR curves: the 6 x N tensor TensorBoard reads.
    from tensorboard.util import tensor_util

    tb_pr = acc.Tensors("pr")
    prs = list(PRCurve.objects.filter(run=run, key="pr").order_by("step"))
    assert [p.step for p in prs] == [e.step for e in tb_pr]
    for row, event in zip(prs, tb_pr, strict=True):
        arr = tensor_util.make_ndarray(event.tensor_proto).astype(np.float64)
        assert row.data["tp"] == arr[0].tolist()
        assert row.data["precision"] == arr[4].tolist()

    # HParams: the session's values become params, its metric a series of kind "hparam".
    from tensorboard.plugins.hparams import plugin_data_pb2

    hp_acc = accumulate(hp_dir)
    content = hp_acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ssi = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    expected = {}
    for k, v in ssi.hparams.items():
        kind = v.WhichOneof("kind")
        expected[k] = getattr(v, kind)
    params = dict(Param.objects.filter(run=run).values_list("key", "value"))
    assert params == expected == {"lr": 0.003, "optimizer": "adam", "layers": 4.0}
    metric = Series.objects.get(run=run, key="hparam/accuracy")
    assert metric.kind == "hparam" and metric.last_value == pytest.approx(0.91)


def test_tensorboardx_logdir_add_scalars_merge(tenants, api, tbx_logdir):
    job = upload_logdir(api(tenants.bob), tbx_logdir)
    assert job["state"] == "succeeded", job
    run = Run.objects.get(project=tenants.vision, source_path="tbx_run")
    ours = stored_scalars(run)
    theirs = tb_scalars(tbx_logdir / "tbx_run")
    base = tbx_logdir / "tbx_run"
    for sub in sorted({p.parent for p in base.rglob("*tfevents*")} - {base}):
        # tensorboardX writes add_scalars to <run>/loss/train: merged as loss/train/loss.
        theirs.update(tb_scalars(sub, prefix=sub.relative_to(base).as_posix()))
    assert sorted(ours) == sorted(theirs) == ["acc", "loss/train/loss", "loss/val/loss"]
    for key in ours:
        same_points(ours[key], theirs[key])
    acc = accumulate(tbx_logdir / "tbx_run")
    assert sorted(Image.objects.filter(run=run).values_list("step", "blob_id")) == sorted(
        (e.step, hashlib.sha256(e.encoded_image_string).hexdigest()) for e in acc.Images("img")
    )
    assert Histogram.objects.filter(run=run).count() == len(acc.Histograms("h"))


def test_keras_train_validation_merge_and_dirs_mode(tenants, api, keras_logdir):
    job = upload_logdir(api(tenants.bob), keras_logdir)
    assert job["state"] == "succeeded"
    run = Run.objects.get(project=tenants.vision, source="upload")
    assert run.source_path == "keras_run"
    ours = stored_scalars(run)
    assert sorted(ours) == ["train/epoch_loss", "validation/epoch_loss"]
    same_points(
        ours["validation/epoch_loss"],
        tb_scalars(keras_logdir / "keras_run/validation")["epoch_loss"],
    )


def test_dirs_mode_keeps_each_directory(tenants, api, project_factory_dirs):
    root, client = project_factory_dirs
    job = upload_logdir(client, root, runs_mode="dirs")
    assert job["state"] == "succeeded"
    paths = sorted(Run.objects.filter(project=tenants.vision).values_list("source_path", flat=True))
    assert paths == ["keras_run/train", "keras_run/validation"]


@pytest.fixture
def project_factory_dirs(tenants, api, tmp_path):
    root = tmp_path / "logs"
    write_keras_like(root)
    return root, api(tenants.bob)


def test_real_tensorflow_files(tenants, api, tmp_path):
    """Files written by TensorFlow 2 / Keras (committed fixtures) import like TensorBoard reads."""
    root = tmp_path / "tf"
    shutil.copytree(TF_FIXTURES, root)
    job = upload_logdir(api(tenants.bob), root)
    assert job["state"] == "succeeded", job
    keras = Run.objects.get(project=tenants.vision, source_path="keras_fit")
    ours = stored_scalars(keras)
    theirs = {}
    for sub in ("train", "validation"):
        acc = accumulate(root / "keras_fit" / sub)
        from tensorboard.util import tensor_util

        for tag in acc.Tags()["tensors"]:
            events = acc.Tensors(tag)
            arr = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
            if all(a.size == 1 and a.dtype.kind == "f" for a in arr):
                theirs[f"{sub}/{tag}"] = [
                    (e.step, e.wall_time, float(a.reshape(-1)[0]))
                    for e, a in zip(events, arr, strict=True)
                ]
    assert theirs and set(theirs) <= set(ours)
    for key, pts in theirs.items():
        same_points(ours[key], pts)


# --- resumability ----------------------------------------------------------------------------------


def test_reupload_changes_nothing(tenants, api, torch_logdir):
    client = api(tenants.bob)
    first = upload_logdir(client, torch_logdir)
    before = snapshot(tenants.vision)
    chunks = UploadChunk.objects.count()
    ids = sorted(SeriesChunk.objects.values_list("pk", flat=True))

    r = create_upload(client, torch_logdir)
    assert r.status_code == 201
    again = r.json()
    assert again["id"] != first["id"]
    sizes = {p: (torch_logdir / p).stat().st_size for p in logdir_files(torch_logdir)}
    assert {f["path"]: f["bytes_received"] for f in again["files"]} == sizes
    assert client.post(f"/api/v1/uploads/{again['id']}/finish/").status_code == 202
    job = client.get(f"/api/v1/jobs/{again['id']}/").json()
    assert job["state"] == "succeeded"
    assert job["summary"]["points"] == first["summary"]["points"]
    assert _nan_safe(snapshot(tenants.vision)) == _nan_safe(before)
    assert UploadChunk.objects.count() == chunks
    assert sorted(SeriesChunk.objects.values_list("pk", flat=True)) == ids  # nothing rewritten
    assert Run.objects.filter(project=tenants.vision).count() == 1


def test_upload_cut_mid_file_resumes_identically(tenants, api, torch_logdir, tmp_path):
    client = api(tenants.bob)
    events = next(p for p in logdir_files(torch_logdir) if p.count("/") == 1)
    size = (torch_logdir / events).stat().st_size
    cut = size // 2 + 3  # not on a record boundary
    r = create_upload(client, torch_logdir)
    job = r.json()
    send_files(client, torch_logdir, job, chunk=4096, limit={events: cut})
    client.post(f"/api/v1/uploads/{job['id']}/finish/")
    partial = client.get(f"/api/v1/jobs/{job['id']}/").json()
    assert partial["state"] == "succeeded"
    tail = [p for p in partial["problems"] if p["file"] == events]
    assert len(tail) == 1 and tail[0]["kind"] == "truncated"
    parsed = UploadFile.objects.get(relative_path=events).bytes_parsed
    assert 0 < parsed < cut

    # The client comes back: the server says where to resume.
    r = create_upload(client, torch_logdir)
    job2 = r.json()
    held = {f["path"]: f["bytes_received"] for f in job2["files"]}
    assert held[events] == cut
    send_files(client, torch_logdir, job2, chunk=4096)
    client.post(f"/api/v1/uploads/{job2['id']}/finish/")
    done = client.get(f"/api/v1/jobs/{job2['id']}/").json()
    assert done["state"] == "succeeded" and done["problems"] == []
    resumed = snapshot(tenants.vision)

    # An uninterrupted import of the same logdir elsewhere stores exactly the same.
    from tests.factories import ProjectFactory

    ProjectFactory(workspace=tenants.acme, slug="other")
    body = {
        "files": [
            {"path": p, "size": (torch_logdir / p).stat().st_size}
            for p in logdir_files(torch_logdir)
        ]
    }
    j3 = client.post("/api/v1/projects/acme/other/uploads/", body, format="json").json()
    send_files(client, torch_logdir, j3, chunk=1 << 20)
    client.post(f"/api/v1/uploads/{j3['id']}/finish/")
    from tracker.models import Project

    whole = snapshot(Project.objects.get(slug="other"))
    assert _nan_safe(resumed) == _nan_safe(whole)


def test_appending_to_a_file_adds_exactly_the_new_points(tenants, api, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "logs"
    w = SummaryWriter(str(root / "live"))
    for s in range(50):
        w.add_scalar("loss", 1.0 / (s + 1), s)
    w.flush()
    client = api(tenants.bob)
    job = upload_logdir(client, root)
    assert job["summary"]["points"] == 50
    for s in range(50, 120):
        w.add_scalar("loss", 1.0 / (s + 1), s)
    w.close()
    job = upload_logdir(client, root)
    assert job["state"] == "succeeded"
    assert job["summary"]["points"] == 120
    run = Run.objects.get(project=tenants.vision)
    ours = stored_scalars(run)
    same_points(ours["loss"], tb_scalars(root / "live")["loss"])
    assert Series.objects.get(run=run, key="loss").count == 120


def test_restart_with_purge_step_follows_tensorboard(tenants, api, tmp_path):
    """SummaryWriter(purge_step=N) writes SessionLog.START: later data replaces step >= N."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "logs"
    w = SummaryWriter(str(root / "r"), filename_suffix=".a")
    for s in range(40):
        w.add_scalar("loss", float(s), s)
    w.close()
    w = SummaryWriter(str(root / "r"), purge_step=25, filename_suffix=".b")
    for s in range(25, 30):
        w.add_scalar("loss", 100.0 + s, s)
    w.close()
    job = upload_logdir(api(tenants.bob), root)
    assert job["state"] == "succeeded"
    ours = stored_scalars(Run.objects.get(project=tenants.vision))["loss"]
    theirs = tb_scalars(root / "r")["loss"]
    assert [p[0] for p in theirs] == list(range(30))
    same_points(ours, theirs)


# --- protocol errors -------------------------------------------------------------------------------


def test_offsets_and_overlaps(tenants, api, torch_logdir):
    client = api(tenants.bob)
    job = create_upload(client, torch_logdir).json()
    path = job["files"][0]["path"]
    data = (torch_logdir / path).read_bytes()
    assert put_chunk(client, job["id"], path, 0, data[:100]).json() == {"bytes_received": 100}
    r = put_chunk(client, job["id"], path, 150, data[150:200])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "offset_mismatch"
    assert r.json()["error"]["expected_offset"] == 100
    # A retried chunk overlapping what we hold with identical bytes is fine and extends.
    assert put_chunk(client, job["id"], path, 50, data[50:180]).json() == {"bytes_received": 180}
    assert put_chunk(client, job["id"], path, 0, data[:180]).json() == {"bytes_received": 180}
    bad = bytearray(data[100:200])
    bad[5] ^= 0xFF
    r = put_chunk(client, job["id"], path, 100, bytes(bad))
    assert r.status_code == 409 and r.json()["error"]["code"] == "content_mismatch"
    assert UploadFile.objects.get(relative_path=path).bytes_received == 180
    r = put_chunk(client, job["id"], path, -1, b"x")
    assert r.status_code == 400 and r.json()["error"]["field"] == "offset"
    r = put_chunk(client, job["id"], "not/declared.tfevents", 0, b"x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_file"


def test_chunk_size_limit(tenants, api, torch_logdir, settings):
    settings.TRACKER_UPLOAD_MAX_CHUNK = 1000
    client = api(tenants.bob)
    job = create_upload(client, torch_logdir).json()
    path = job["files"][0]["path"]
    r = put_chunk(client, job["id"], path, 0, b"\0" * 1001)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert UploadChunk.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    ["../escape/events.out.tfevents.1", "/abs/events.out.tfevents.1", "a/../../x", "", "a\\..\\b"],
)
def test_unsafe_paths_are_refused(tenants, api, path):
    body = {"files": [{"path": path, "size": 10}]}
    r = api(tenants.bob).post(f"/api/v1/projects/{PROJECT}/uploads/", body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"].startswith("files")
    assert UploadFile.objects.count() == 0


def test_bad_bodies(tenants, api):
    client = api(tenants.bob)
    url = f"/api/v1/projects/{PROJECT}/uploads/"
    assert client.post(url, {"files": []}, format="json").status_code == 400
    assert (
        client.post(url, {"files": [{"path": "a", "size": -1}]}, format="json").status_code == 400
    )
    r = client.post(url, {"files": [{"path": "a"}, {"path": "./a"}]}, format="json")
    assert r.status_code == 400 and "twice" in r.json()["error"]["message"]
    r = client.post(url, {"files": [{"path": "a"}], "runs_mode": "weird"}, format="json")
    assert r.status_code == 400 and r.json()["error"]["field"] == "runs_mode"


# --- authorization ---------------------------------------------------------------------------------


def test_authorization(tenants, api, torch_logdir):
    body = {"files": [{"path": "r/events.out.tfevents.1", "size": 3}]}
    url = f"/api/v1/projects/{PROJECT}/uploads/"
    assert api(tenants.carol).post(url, body, format="json").status_code == 403
    assert api(tenants.mallory).post(url, body, format="json").status_code == 404
    assert api().post(url, body, format="json").status_code in (401, 403, 404)
    job = api(tenants.bob).post(url, body, format="json").json()
    jid = job["id"]
    # Viewers read the job; they cannot add bytes or finish; other tenants see nothing.
    assert api(tenants.carol).get(f"/api/v1/jobs/{jid}/").status_code == 200
    r = put_chunk(api(tenants.carol), jid, "r/events.out.tfevents.1", 0, b"abc")
    assert r.status_code == 403
    assert api(tenants.carol).post(f"/api/v1/uploads/{jid}/finish/").status_code == 403
    for client in (api(tenants.mallory), api()):
        r = client.get(f"/api/v1/jobs/{jid}/")
        assert r.status_code == 404 and r.json() == {
            "error": {"code": "not_found", "message": "Not found."}
        }
        assert put_chunk(client, jid, "r/events.out.tfevents.1", 0, b"abc").status_code == 404
        assert client.post(f"/api/v1/uploads/{jid}/finish/").status_code == 404
    assert api(tenants.mallory).get("/api/v1/jobs/999999/").status_code == 404
    assert UploadChunk.objects.count() == 0
    assert api(tenants.alice).get(f"/api/v1/projects/{PROJECT}/jobs/").status_code == 200
    assert api(tenants.mallory).get(f"/api/v1/projects/{PROJECT}/jobs/").status_code == 404


# --- query counts ----------------------------------------------------------------------------------


def _declare(client, n: int) -> int:  # type: ignore[no-untyped-def]
    body = {"files": [{"path": f"run{i}/events.out.tfevents.{i}", "size": 0} for i in range(n)]}
    return client.post(f"/api/v1/projects/{PROJECT}/uploads/", body, format="json").json()["id"]


def _queries(client, url: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        r = client.get(url)
    assert r.status_code == 200, r.content
    return len(ctx.captured_queries), r.json()


def test_job_detail_query_count_is_fixed(tenants, api, django_assert_max_num_queries):
    client = api(tenants.carol)
    small, big = _declare(api(tenants.bob), 2), _declare(api(tenants.bob), 40)
    client.get(f"/api/v1/jobs/{small}/")  # warm-up: token bookkeeping happens once
    n_small, _ = _queries(client, f"/api/v1/jobs/{small}/")
    n_big, body = _queries(client, f"/api/v1/jobs/{big}/")
    assert len(body["files"]) == 40
    assert n_small == n_big
    with django_assert_max_num_queries(6):
        client.get(f"/api/v1/jobs/{big}/")


def test_job_list_query_count_is_fixed(tenants, api, django_assert_max_num_queries):
    bob = api(tenants.bob)
    _declare(bob, 1)
    client = api(tenants.carol)
    url = f"/api/v1/projects/{PROJECT}/jobs/"
    client.get(url)
    n_one, body = _queries(client, url)
    assert len(body["results"]) == 1
    for _ in range(12):
        _declare(bob, 3)
    n_many, body = _queries(client, url + "?limit=10")
    assert len(body["results"]) == 10 and body["next"]
    assert n_one == n_many
    with django_assert_max_num_queries(6):
        client.get(url)


# --- the writers' output used above is self-consistent ----------------------------------------------


def test_writers_produce_what_the_tests_expect(tmp_path):
    write_torch_logdir(tmp_path / "a", steps=11)
    write_tbx_logdir(tmp_path / "b", steps=9)
    assert any("tfevents" in p for p in logdir_files(tmp_path / "a"))
    assert len([p for p in logdir_files(tmp_path / "b") if "tfevents" in p]) == 3
