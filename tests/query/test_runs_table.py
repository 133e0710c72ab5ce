import math

import pytest
from django.core import signing

from tracker.access import Principal
from tracker.selectors.runs_table import discover_columns, runs_table
from tracker.services.errors import ServiceError

from .conftest import make_run, put_series

URL = "/api/v1/projects/acme/vision/runs/table"


@pytest.fixture
def tied_runs(tenants):
    """23 runs: numeric lr with ties, a few string lrs, a few without lr; metric with NULLs."""
    runs = []
    for i in range(23):
        if i % 7 == 3:
            params = {"lr": f"s{i % 2}"}  # string-valued param
        elif i % 5 == 4:
            params = {}  # no lr at all
        else:
            params = {"lr": [0.1, 0.2, 0.3][i % 3]}  # heavy ties
        run = make_run(tenants.vision, tenants.alice, name=f"run-{i % 4}", params=params)
        if i % 3:
            put_series(run, "acc", [i % 4 / 10, float(i % 5)])
        runs.append(run)
    return runs


def _walk(principal, project, sort, limit):
    names, cursor, pages = [], None, 0
    while True:
        page = runs_table(
            principal,
            project,
            sort=sort,
            limit=limit,
            cursor=cursor,
            columns=[
                "name",
                "params.lr",
                "metrics.acc.last",
            ],
        )
        names.extend(r["id"] for r in page.rows)
        pages += 1
        if page.next_cursor is None:
            return names, pages
        cursor = page.next_cursor
        assert pages < 100


def _expected(runs, key_fn, desc):
    """NULLs last in both directions; ties broken by id in the sort's direction."""
    with_val = [r for r in runs if key_fn(r) is not None]
    without = [r for r in runs if key_fn(r) is None]
    with_val.sort(key=lambda r: (key_fn(r), r.pk), reverse=desc)
    without.sort(key=lambda r: r.pk, reverse=desc)
    return [r.pk for r in with_val + without]


def _lr(run):
    p = run.params.filter(key="lr").first()
    if p is None:
        return None
    # numbers first (ordered numerically), then strings: encode as (0, n) / (1, s)
    return (0, p.value_num, "") if p.value_num is not None else (1, 0, p.value_str)


def _acc(run):
    s = run.series.filter(key="acc").first()
    return None if s is None else s.last_value


@pytest.mark.parametrize("limit", [1, 4, 50])
@pytest.mark.parametrize(
    "sort, key_fn",
    [
        ("params.lr", _lr),
        ("-params.lr", _lr),
        ("metrics.acc.last", _acc),
        ("-metrics.acc.last", _acc),
        ("name", lambda r: r.name),
        ("-name", lambda r: r.name),
        ("-created_at", lambda r: r.created_at),
    ],
)
def test_keyset_pages_cover_every_run_once_in_order(tenants, tied_runs, sort, key_fn, limit):
    p = Principal(user=tenants.alice)
    got, pages = _walk(p, tenants.vision, sort, limit)
    desc = sort.startswith("-")
    if key_fn is _lr:
        # string params sort after numbers whatever the direction of each part
        nums = [r for r in tied_runs if _lr(r) and _lr(r)[0] == 0]
        strs = [r for r in tied_runs if _lr(r) and _lr(r)[0] == 1]
        none = [r for r in tied_runs if _lr(r) is None]
        want = (
            [r.pk for r in sorted(nums, key=lambda r: (_lr(r)[1], r.pk), reverse=desc)]
            + [r.pk for r in sorted(strs, key=lambda r: (_lr(r)[2], r.pk), reverse=desc)]
            + [r.pk for r in sorted(none, key=lambda r: r.pk, reverse=desc)]
        )
    else:
        want = _expected(tied_runs, key_fn, desc)
    assert got == want
    assert pages == math.ceil(len(tied_runs) / limit) or (pages == len(tied_runs) // limit + 1)


def test_prev_cursor_walks_back(tenants, tied_runs):
    p = Principal(user=tenants.alice)
    pages = []
    page = runs_table(p, tenants.vision, sort="-params.lr", limit=5)
    assert page.prev_cursor is None and page.total == 23
    pages.append([r["id"] for r in page.rows])
    while page.next_cursor:
        page = runs_table(p, tenants.vision, sort="-params.lr", limit=5, cursor=page.next_cursor)
        pages.append([r["id"] for r in page.rows])
    assert page.next_cursor is None and len(pages) == 5
    back = []
    while page.prev_cursor:
        page = runs_table(p, tenants.vision, sort="-params.lr", limit=5, cursor=page.prev_cursor)
        back.append([r["id"] for r in page.rows])
    assert back == list(reversed(pages[:-1]))
    assert page.prev_cursor is None


@pytest.mark.parametrize("sort", ["-metrics.acc.last", "metrics.acc.last", "params.lr"])
def test_prev_cursor_walks_back_across_null_groups(tenants, tied_runs, sort):
    """Param/metric sorts read NULL and non-NULL groups separately: pages must still chain."""
    p = Principal(user=tenants.alice)
    page = runs_table(p, tenants.vision, sort=sort, limit=4)
    pages = [[r["id"] for r in page.rows]]
    while page.next_cursor:
        page = runs_table(p, tenants.vision, sort=sort, limit=4, cursor=page.next_cursor)
        pages.append([r["id"] for r in page.rows])
    assert sorted(i for pg in pages for i in pg) == sorted(r.pk for r in tied_runs)
    back = []
    while page.prev_cursor:
        page = runs_table(p, tenants.vision, sort=sort, limit=4, cursor=page.prev_cursor)
        back.append([r["id"] for r in page.rows])
    assert back == list(reversed(pages[:-1]))


def test_rows_carry_chosen_columns(tenants, vision_runs):
    r1 = vision_runs[0]
    page = runs_table(
        Principal(user=tenants.carol),
        tenants.vision,
        columns=["params.lr", "params.opt", "metrics.val/acc.max", "metrics.loss.count", "name"],
        sort="name",
    )
    row = next(r for r in page.rows if r["id"] == r1.pk)
    assert row["params"] == {"lr": 0.001, "opt": "adam"}
    assert row["metrics"] == {"val/acc.max": 0.95, "loss.count": 3}
    assert (
        row["created_by"] == "alice" and row["tags"] == ["baseline"] and row["status"] == "running"
    )
    vit = next(r for r in page.rows if r["name"] == "vit")
    assert vit["params"] == {"lr": 0.01, "opt": None} and vit["metrics"]["val/acc.max"] is None
    assert page.columns == [
        "params.lr",
        "params.opt",
        "metrics.val/acc.max",
        "metrics.loss.count",
        "name",
    ]
    # other tenants' runs never appear
    assert tenants.other.pk not in {r["id"] for r in page.rows}


def test_bad_sort_columns_limit_and_cursor(tenants, vision_runs):
    p = Principal(user=tenants.alice)
    for kwargs in (
        {"sort": "tags"},
        {"sort": "__class__"},
        {"sort": "metrics.loss"},
        {"columns": ["params."]},
        {"columns": ["bogus"]},
        {"limit": 0},
        {"limit": 5000},
        {"cursor": "garbage"},
    ):
        with pytest.raises(ServiceError):
            runs_table(p, tenants.vision, **kwargs)
    page = runs_table(p, tenants.vision, limit=1, sort="name")
    with pytest.raises(ServiceError, match="another sort"):
        runs_table(p, tenants.vision, limit=1, sort="-name", cursor=page.next_cursor)
    # a forged cursor (valid base64 JSON, no signature) is refused
    forged = signing.dumps({"d": "n", "v": ["x", 1], "f": "0"}, salt="other")
    with pytest.raises(ServiceError, match="Invalid cursor"):
        runs_table(p, tenants.vision, limit=1, sort="name", cursor=forged)


def test_api_table_and_columns(tenants, vision_runs, api):
    client = api(tenants.carol)
    r = client.get(
        URL,
        {
            "filter": "params.lr >= 0.01",
            "sort": "-params.lr",
            "columns": "params.lr,metrics.val/acc.last",
            "limit": 1,
        },
    )
    assert r.status_code == 200, r.content
    body = r.json()
    assert [row["name"] for row in body["results"]] == ["ResNet-b"]
    assert body["total"] == 2 and body["next_cursor"] and body["prev_cursor"] is None
    assert body["results"][0]["metrics"] == {"val/acc.last": 0.4}
    r2 = client.get(body["next"])
    assert [row["name"] for row in r2.json()["results"]] == ["vit"]
    assert r2.json()["next"] is None and r2.json()["previous"]
    r = client.get("/api/v1/projects/acme/vision/columns")
    assert r.json()["params"] == ["flag", "lr", "opt"]
    assert r.json()["metrics"] == ["loss", "val/acc"]
    for bad in (
        {"sort": "nope"},
        {"limit": "x"},
        {"limit": 0},
        {"cursor": "zzz"},
        {"columns": "bogus"},
    ):
        r = client.get(URL, bad)
        assert r.status_code == 400 and r.json()["error"]["message"], bad


def test_nonfinite_metric_cells_are_json_strings(tenants, api):
    run = make_run(tenants.vision, tenants.alice, name="diverged")
    put_series(run, "loss", [1.0, float("inf")])
    put_series(run, "gnorm", [float("nan")])
    r = api(tenants.alice).get(
        URL, {"columns": "metrics.loss.last,metrics.gnorm.last,metrics.loss.max"}
    )
    assert r.status_code == 200
    assert r.json()["results"][0]["metrics"] == {
        "loss.last": "Infinity",
        "gnorm.last": "NaN",
        "loss.max": "Infinity",
    }


def test_discover_columns_for_run_scoped_share_link(tenants, vision_runs):
    from tracker.services.sharing import create_share_link, resolve_share_secret

    link, secret = create_share_link(project=tenants.vision, user=tenants.alice, run=vision_runs[2])
    p = Principal(share_link=resolve_share_secret(secret))
    assert discover_columns(tenants.vision, principal=p) == {
        "fields": ["name", "status", "tags", "created_by", "created_at"],
        "params": ["flag", "lr"],
        "metrics": [],
        "aggregates": ["last", "min", "max", "count", "first_step", "last_step"],
    }
    page = runs_table(p, tenants.vision)
    assert [r["id"] for r in page.rows] == [vision_runs[2].pk]


@pytest.mark.parametrize("n_runs", [3, 40])
def test_runs_table_query_count_is_fixed(tenants, api, django_assert_num_queries, n_runs):
    for i in range(n_runs):
        run = make_run(tenants.vision, tenants.bob, name=f"r{i}", params={"lr": i / 100, "bs": 32})
        put_series(run, "acc", [i / 100])
    client = api(tenants.carol)
    params = {
        "filter": 'params.lr >= 0 and metrics.acc.max >= 0 and name ~ "r"',
        "sort": "-metrics.acc.max",
        "columns": "name,params.lr,params.bs,metrics.acc.last,metrics.acc.max",
        "limit": 50,
    }
    # token lookup + last_used, memberships (one query), project, page, params, metrics, count
    with django_assert_num_queries(8):
        r = client.get(URL, params)
    assert r.status_code == 200 and len(r.json()["results"]) == n_runs


def test_discover_columns_follows_writes_and_deletes(tenants, vision_runs):
    from tracker.models import Param, ParamType

    p = Principal(user=tenants.alice)
    run = make_run(tenants.vision, tenants.alice, name="extra", params={"only_here": 1})
    put_series(run, "only/metric", [1.0])
    # Rows written without the services (bulk_create) are listed too.
    Param.objects.bulk_create(
        [Param(run=run, key="bulk", value=2, type=ParamType.NUMBER, value_num=2.0)]
    )
    found = discover_columns(tenants.vision, principal=p)
    assert {"only_here", "bulk"} <= set(found["params"]) and "only/metric" in found["metrics"]
    run.delete()
    found = discover_columns(tenants.vision, principal=p)
    assert found["params"] == ["flag", "lr", "opt"]
    assert found["metrics"] == ["loss", "val/acc"]
    # Keys of another tenant's project never show.
    assert "only_here" not in discover_columns(tenants.secret)["params"]
