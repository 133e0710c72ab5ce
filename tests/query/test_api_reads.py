import json

import pytest

from tracker.models import Visibility
from tracker.services.sharing import create_share_link

from .conftest import add_media, put_series


def _endpoints(run_id, other_id):
    return [
        ("/api/v1/projects/acme/vision/runs/table", {}),
        ("/api/v1/projects/acme/vision/columns", {}),
        ("/api/v1/projects/acme/vision/series", {"runs": f"{run_id}", "keys": "val/acc"}),
        ("/api/v1/projects/acme/vision/hparams", {}),
        ("/api/v1/projects/acme/vision/export", {"format": "json"}),
        ("/api/v1/projects/acme/vision/export.zip", {}),
        (f"/api/v1/runs/{run_id}/series/", {"keys": "val/acc"}),
        (f"/api/v1/runs/{run_id}/series/export", {"format": "csv"}),
        (f"/api/v1/runs/{run_id}/keys", {}),
        (f"/api/v1/runs/{run_id}/export", {}),
        (f"/api/v1/runs/{run_id}/media/histograms", {"key": "weights"}),
        (f"/api/v1/runs/{run_id}/media/text", {"key": "notes"}),
        (f"/api/v1/runs/{run_id}/media/pr-curves", {"key": "pr"}),
    ]


def _drain(r):
    if getattr(r, "streaming", False):
        b"".join(r.streaming_content)


def test_viewer_reads_everything_mallory_gets_404(tenants, vision_runs, api):
    run = vision_runs[0]
    add_media(run)
    carol, mallory, anon = api(tenants.carol), api(tenants.mallory), api()
    for url, params in _endpoints(run.pk, tenants.other.pk):
        r = carol.get(url, params)
        _drain(r)
        assert r.status_code == 200, (url, r.status_code, getattr(r, "content", b"")[:200])
        for outsider in (mallory, anon):
            r = outsider.get(url, params)
            assert r.status_code == 404, (url, r.status_code)
            assert r.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_compare_with_a_foreign_run_is_404(tenants, vision_runs, api):
    carol = api(tenants.carol)
    ids = f"{vision_runs[0].pk},{tenants.other.pk}"
    r = carol.get("/api/v1/projects/acme/vision/series", {"runs": ids, "keys": "val/acc"})
    assert r.status_code == 404
    # mallory's own run, asked through acme's project URL, is not there either
    r = api(tenants.mallory).get(
        "/api/v1/projects/umbrella/secret/series",
        {"runs": f"{tenants.other.pk},{vision_runs[0].pk}", "keys": "val/acc"},
    )
    assert r.status_code == 404
    r = carol.get("/api/v1/projects/acme/vision/series", {"runs": "1,x", "keys": "a"})
    assert r.status_code == 400


def test_share_links_read_only_their_scope(tenants, vision_runs, api):
    _, secret = create_share_link(project=tenants.vision, user=tenants.alice)
    client = api()
    r = client.get("/api/v1/projects/acme/vision/runs/table", {"share": secret})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    r = client.get(
        f"/api/v1/runs/{vision_runs[1].pk}/series/", {"keys": "val/acc", "share": secret}
    )
    assert r.status_code == 200
    for url in (
        "/api/v1/projects/umbrella/secret/runs/table",
        f"/api/v1/runs/{tenants.other.pk}/series/",
        f"/api/v1/runs/{tenants.other.pk}/export",
    ):
        assert client.get(url, {"keys": "val/acc", "share": secret}).status_code == 404
    # a run-scoped link: its run only
    _, run_secret = create_share_link(
        project=tenants.vision, user=tenants.alice, run=vision_runs[0]
    )
    r = client.get("/api/v1/projects/acme/vision/runs/table", {"share": run_secret})
    assert [row["id"] for row in r.json()["results"]] == [vision_runs[0].pk]
    assert (
        client.get(f"/api/v1/runs/{vision_runs[1].pk}/keys", {"share": run_secret}).status_code
        == 404
    )
    r = client.get("/api/v1/projects/acme/vision/export", {"share": run_secret, "format": "json"})
    doc = json.loads(b"".join(r.streaming_content))
    assert [x["id"] for x in doc["runs"]] == [vision_runs[0].pk]
    assert [row["run"] for row in doc["hparams"]["rows"]] == [vision_runs[0].pk]


def test_public_project_is_readable_anonymously(tenants, vision_runs, api):
    tenants.vision.visibility = Visibility.PUBLIC
    tenants.vision.save()
    r = api().get(f"/api/v1/runs/{vision_runs[0].pk}/series/", {"keys": "val/acc"})
    assert r.status_code == 200


def test_series_endpoint_wire_format(tenants, vision_runs, api):
    run = vision_runs[0]
    put_series(run, "odd", [1.0, float("nan"), float("inf"), float("-inf")])
    r = api(tenants.carol).get(f"/api/v1/runs/{run.pk}/series/", {"keys": "odd,val/acc,missing"})
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    body = json.loads(r.content)  # strict JSON: no bare NaN tokens
    odd, acc = body["series"]
    assert odd["key"] == "odd" and odd["value"] == [1.0, "NaN", "Infinity", "-Infinity"]
    assert odd["x"] == odd["step"] == [0, 1, 2, 3] and odd["downsampled"] is False
    assert acc["value"] == [0.5, 0.95, 0.9] and acc["count"] == 3
    r = api(tenants.carol).get(
        "/api/v1/projects/acme/vision/series",
        {
            "runs": f"{vision_runs[1].pk},{run.pk}",
            "keys": "val/acc",
            "x": "relative",
            "from": 0,
            "to": 0.6,
        },
    )
    assert [(s["run"], s["x"]) for s in r.json()["series"]] == [
        (vision_runs[1].pk, [0.0, 0.5]),
        (run.pk, [0.0, 0.5]),
    ]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"keys": ""}, "keys"),
        ({"keys": "a", "max_points": "2"}, "max_points"),
        ({"keys": "a", "max_points": "abc"}, "max_points"),
        ({"keys": "a", "x": "epoch"}, "x"),
        ({"keys": "a", "from": "abc"}, "from"),
        ({"keys": "a", "from": "5", "to": "1"}, "from"),
        ({"keys": "a", "from": "nan"}, "from"),
        ({"keys": "a", "to": "inf"}, "to"),
    ],
)
def test_series_bad_input_is_400(tenants, vision_runs, api, params, field):
    r = api(tenants.carol).get(f"/api/v1/runs/{vision_runs[0].pk}/series/", params)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["field"] == field


def test_keys_lists_summaries(tenants, vision_runs, api):
    r = api(tenants.carol).get(f"/api/v1/runs/{vision_runs[0].pk}/keys")
    keys = {k["key"]: k for k in r.json()["keys"]}
    assert keys["val/acc"] | {} == {
        "key": "val/acc",
        "kind": "metric",
        "count": 3,
        "first_step": 0,
        "last_step": 2,
        "last_value": 0.9,
        "min": 0.5,
        "max": 0.95,
        "first_wall": 1.7e9,
        "last_wall": 1.7e9 + 1.0,
    }
    assert keys["loss"]["count"] == 3 and keys["loss"]["min"] == 0.5


def test_media_reads(tenants, vision_runs, api):
    run = vision_runs[0]
    add_media(run)
    client = api(tenants.carol)
    r = client.get(f"/api/v1/runs/{run.pk}/media/histograms")
    assert r.json() == {"tags": [{"key": "weights", "count": 3, "first_step": 0, "last_step": 2}]}
    r = client.get(f"/api/v1/runs/{run.pk}/media/histograms", {"key": "weights", "limit": 2})
    body = r.json()
    assert body["sampled"] and body["total_steps"] == 3
    assert [e["step"] for e in body["entries"]] == [0, 2]  # first and last always kept
    r = client.get(f"/api/v1/runs/{run.pk}/media/text", {"key": "notes"})
    assert r.json()["entries"] == [{"step": 1, "wall_time": 1.7e9, "value": "<b>hi</b>"}]
    r = client.get(f"/api/v1/runs/{run.pk}/media/pr-curves", {"key": "pr"})
    assert r.json()["entries"][0]["data"] == {"precision": [1.0], "recall": [0.5]}


def test_hparams_table(tenants, vision_runs, api):
    r = api(tenants.carol).get(
        "/api/v1/projects/acme/vision/hparams", {"metrics": "val/acc.max,loss"}
    )
    body = r.json()
    assert body["params"] == ["flag", "lr", "opt"] and body["varying"] == ["flag", "lr", "opt"]
    assert body["metrics"] == ["val/acc.max", "loss.last"]
    rows = {row["name"]: row for row in body["rows"]}
    assert rows["resnet-a"]["metrics"] == {"val/acc.max": 0.95, "loss.last": 0.5}
    assert rows["vit"]["metrics"] == {"val/acc.max": None, "loss.last": None}
    assert rows["ResNet-b"]["params"] == {"lr": 0.1, "opt": "sgd"}
    assert "secret-run" not in rows


def test_series_query_count_is_fixed(tenants, api, django_assert_num_queries):
    from .conftest import make_run

    runs = [make_run(tenants.vision, tenants.alice, name=f"r{i}") for i in range(6)]
    for run in runs:
        put_series(run, "a", list(range(50)))
        put_series(run, "b", list(range(20)))
    client = api(tenants.carol)
    client.get("/api/v1/me/")  # the token's first use also records last_used
    for n in (1, 6):
        ids = ",".join(str(r.pk) for r in runs[:n])
        # token, memberships (workspace and project grants in one), project, runs, series, chunk ranges, chunk data: 1 or 6 runs
        with django_assert_num_queries(7):
            r = client.get("/api/v1/projects/acme/vision/series", {"runs": ids, "keys": "a,b"})
        assert len(r.json()["series"]) == 2 * n
