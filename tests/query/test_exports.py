import csv
import io
import json
import math
import zipfile

import numpy as np
import pytest

from tracker.models import Image
from tracker.selectors.exports import csv_text, zip_name
from tracker.services.metrics import CHUNK_TARGET

from .conftest import add_media, make_run, put_series


def _f(v):
    """Wire value -> float ("NaN"/"Infinity"/"-Infinity" strings in JSON)."""
    return float(v) if isinstance(v, str) else v


def _same(a, b):
    """Bit-identical float arrays (NaN included)."""
    return np.asarray(a, dtype=np.float64).tobytes() == np.asarray(b, dtype=np.float64).tobytes()


@pytest.fixture
def stored(tenants):
    run = make_run(
        tenants.vision, tenants.alice, name='=HYPERLINK("x")', params={"lr": 0.1, "opt": "-adam"}
    )
    n = CHUNK_TARGET * 2 + 17  # several chunks
    rng = np.random.default_rng(3)
    vals = rng.normal(size=n) * 1e-3
    vals[[5, 9000, n - 1]] = [np.nan, np.inf, -np.inf]
    walls = 1.7e9 + np.cumsum(rng.uniform(0.01, 1.0, size=n))
    walls = np.round(walls * 1e6) / 1e6  # the store keeps microseconds
    a = put_series(run, "loss", vals, steps=np.arange(n) * 3, walls=walls)
    b = put_series(run, "=cmd|' /C calc'!A0", [-1.5, 2.0])
    add_media(run)
    return run, {"loss": a, "=cmd|' /C calc'!A0": b}


def test_csv_round_trip_and_formula_guard(tenants, stored, api):
    run, pts = stored
    r = api(tenants.carol).get(f"/api/v1/runs/{run.pk}/series/export", {"format": "csv"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert r.streaming and r["X-Content-Type-Options"] == "nosniff"
    text = b"".join(r.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["key", "step", "wall_time", "value"]
    by_key = {}
    for key, step, wall, value in rows[1:]:
        by_key.setdefault(key, []).append((int(step), float(wall), float(value)))
    # the formula-looking key is neutralised; negative numbers stay numbers
    assert set(by_key) == {"loss", "'=cmd|' /C calc'!A0"}
    assert by_key["'=cmd|' /C calc'!A0"] == [(0, 1.7e9, -1.5), (1, 1.7e9 + 0.5, 2.0)]
    got = np.array(by_key["loss"])
    ref = pts["loss"]
    assert np.array_equal(got[:, 0], ref.steps)
    assert np.array_equal(got[:, 1], ref.walls)
    assert _same(got[:, 2], ref.values)
    assert math.isnan(got[5, 2]) and got[9000, 2] == math.inf and got[-1, 2] == -math.inf


def test_csv_cells():
    assert csv_text("=1+1") == "'=1+1"
    for lead in "=+-@\t\r":
        assert csv_text(lead + "x").startswith("'") or csv_text(lead + "x").startswith("\"'")
    assert csv_text("plain") == "plain"
    assert csv_text('a,"b"') == '"a,""b"""'


def test_jsonl_round_trip(tenants, stored, api):
    run, pts = stored
    r = api(tenants.carol).get(
        f"/api/v1/runs/{run.pk}/series/export", {"format": "jsonl", "keys": "loss"}
    )
    assert r.status_code == 200
    lines = b"".join(r.streaming_content).decode().splitlines()
    objs = [json.loads(line) for line in lines]
    assert {o["key"] for o in objs} == {"loss"}
    ref = pts["loss"]
    assert [o["step"] for o in objs] == ref.steps.tolist()
    assert [o["wall_time"] for o in objs] == ref.walls.tolist()
    assert _same([_f(o["value"]) for o in objs], ref.values)
    assert objs[5]["value"] == "NaN" and objs[9000]["value"] == "Infinity"


def test_bad_export_format_is_400(tenants, stored, api):
    run, _ = stored
    r = api(tenants.carol).get(f"/api/v1/runs/{run.pk}/series/export", {"format": "xlsx"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "format"


def test_project_json_export_contract(tenants, stored, vision_runs, api):
    run, pts = stored
    r = api(tenants.carol).get("/api/v1/projects/acme/vision/export", {"format": "json"})
    assert r.status_code == 200 and r.streaming
    doc = json.loads(b"".join(r.streaming_content))
    assert doc["format"] == "tracker-export" and doc["project"] == "acme/vision"
    runs = {x["id"]: x for x in doc["runs"]}
    assert set(runs) == {run.pk, *(v.pk for v in vision_runs)}  # umbrella's run is not there
    mine = runs[run.pk]
    assert mine["params"] == {"lr": 0.1, "opt": "-adam"} and mine["created_by"] == "alice"
    series = {s["key"]: s for s in mine["series"]}
    for key, ref in pts.items():
        points = series[key]["points"]
        assert series[key]["count"] == len(ref) == len(points)
        assert [p[0] for p in points] == ref.steps.tolist()
        assert [p[1] for p in points] == ref.walls.tolist()
        assert _same([_f(p[2]) for p in points], ref.values)
    imgs = mine["images"]
    assert [(i["tag"], i["step"], i["width"], i["height"]) for i in imgs] == [
        ("samples/=x", 0, 4, 3),
        ("samples/=x", 5, 4, 3),
    ]
    stored_shas = list(
        Image.objects.filter(run=run).order_by("step").values_list("blob_id", flat=True)
    )
    assert [i["sha256"] for i in imgs] == stored_shas
    assert [h["step"] for h in mine["histograms"]] == [0, 1, 2]
    assert mine["histograms"][2]["bucket_counts"] == [2, 1, 2]
    assert mine["text"] == [{"tag": "notes", "step": 1, "wall_time": 1.7e9, "value": "<b>hi</b>"}]
    assert mine["pr_curves"][0]["data"]["recall"] == [0.5]
    hp = doc["hparams"]
    assert "lr" in hp["params"] and {row["run"] for row in hp["rows"]} == set(runs)


def test_run_export(tenants, stored, api):
    run, pts = stored
    r = api(tenants.carol).get(f"/api/v1/runs/{run.pk}/export")
    doc = json.loads(b"".join(r.streaming_content))
    assert doc["id"] == run.pk and doc["name"] == run.name
    assert len({s["key"]: s for s in doc["series"]}["loss"]["points"]) == len(pts["loss"])


def test_project_zip(tenants, stored, api):
    run, pts = stored
    r = api(tenants.carol).get("/api/v1/projects/acme/vision/export.zip")
    assert r.status_code == 200 and r["Content-Type"] == "application/zip" and r.streaming
    pieces = list(r.streaming_content)
    assert len(pieces) > 1  # streamed, not built in one piece
    zf = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert zf.testzip() is None
    names = zf.namelist()
    assert "export.json" in names and f"runs/{run.pk}/metrics.csv" in names
    doc = json.loads(zf.read("export.json"))
    assert run.pk in {x["id"] for x in doc["runs"]}
    rows = list(csv.reader(io.StringIO(zf.read(f"runs/{run.pk}/metrics.csv").decode())))
    assert len(rows) == 1 + sum(len(p) for p in pts.values())
    img_names = sorted(n for n in names if "/images/" in n)
    assert img_names == [
        f"runs/{run.pk}/images/samples/_x/0-0.png",
        f"runs/{run.pk}/images/samples/_x/5-0.png",
    ]
    assert zf.read(img_names[0]).startswith(b"\x89PNG")


def test_zip_names_cannot_escape():
    assert (
        zip_name("runs/1/images", "../../etc/passwd", "0-0.png")
        == "runs/1/images/etc/passwd/0-0.png"
    )
    assert zip_name("/abs", "a\\..\\b") == "abs/a_.._b"
