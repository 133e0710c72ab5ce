import pytest

from tracker.access import Principal
from tracker.models import RunStatus
from tracker.selectors import filtering
from tracker.selectors.filtering import And, Compare, FilterError, Not, Or, parse
from tracker.selectors.runs_table import runs_table

from .conftest import put_series


# --- parser ---------------------------------------------------------------------------------------
def test_parses_precedence_and_fields():
    node = parse('params.lr < 0.01 and metrics.val/acc.max > 0.9 or not tags contains "baseline"')
    assert isinstance(node, Or)
    left, right = node.items
    assert isinstance(left, And) and isinstance(right, Not)
    lr, acc = left.items
    assert (lr.field.kind, lr.field.name, lr.op, lr.value) == ("param", "lr", "<", 0.01)
    assert (acc.field.kind, acc.field.name, acc.field.agg) == ("metric", "val/acc", "max")
    assert right.item == Compare(right.item.field, "contains", "baseline", right.item.pos)


def test_parses_literals_brackets_and_parentheses():
    node = parse(
        '(params["batch size"] = 32 or params.opt = \'sgd\') and metrics["val acc"].last != null'
        ' and params.flag = true and created_at >= "2026-01-01" and status = "finished"'
    )
    assert isinstance(node, And)
    assert node.items[0].items[0].field.name == "batch size"
    assert node.items[1].field.name == "val acc" and node.items[1].value is None
    assert node.items[2].value is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("__class__ = 1", "Unknown field '__class__'"),
        ("_connector = 'OR'", "Unknown field '_connector'"),
        ("name__startswith = 'x'", "Unknown field"),
        ("params.lr = 1; DROP TABLE tracker_run", "Unexpected character ';'"),
        ("name = 'x' OR 1=1", "Expected a field name"),
        ("metrics.loss > 1", "need an aggregate"),
        ("metrics.loss.avg > 1", "need an aggregate"),
        ("params.lr <", "Expected a value"),
        ("params.lr 1", "Expected an operator"),
        ("(params.lr = 1", "Expected ')'"),
        ("params.lr = 1)", "Unexpected ')'"),
        ("name = 'unterminated", "Unterminated string"),
        ("status = 'exploded'", "Unknown status"),
        ("tags = 'x'", "tags contains"),
        ("created_at > 'yesterday'", "Not a date"),
        ("metrics.loss.last > 'x'", "is a number"),
        ("name = 5", "quote the value"),
        ("params.lr < true", "true/false/null only work"),
        ("params.lr = 1e999", "out of range"),
        ("", "Empty"),
    ],
)
def test_bad_filters_explain_themselves(text, message):
    if text == "":
        text = "   ()"
        message = "Expected a field name"
    with pytest.raises(FilterError) as e:
        parse(text)
    assert message in e.value.message
    assert "position" in e.value.message and isinstance(e.value.position, int)


def test_limits_on_length_depth_and_size():
    with pytest.raises(FilterError, match="longer than 2000"):
        parse("name = 'x' and " * 200 + "name = 'y'")
    with pytest.raises(FilterError, match="nests deeper"):
        parse("(" * 30 + "name = 'x'" + ")" * 30)
    with pytest.raises(FilterError, match="nests deeper"):
        parse("not " * 30 + "name = 'x'")
    with pytest.raises(FilterError, match="more than 50 comparisons"):
        parse(" or ".join(f"params.a = {i}" for i in range(51)))
    # just inside the limits parses fine
    assert parse("(" * 5 + "name = 'x'" + ")" * 5) is not None


def test_blank_filter_matches_everything():
    assert parse("") is None and parse("   ") is None
    assert filtering.filter_q("") is None


# --- semantics against the database ------------------------------------------------------------------
def _ids(tenants, text):
    page = runs_table(Principal(user=tenants.alice), tenants.vision, filter_expr=text, limit=100)
    return {r["name"] for r in page.rows}


def test_filter_semantics(tenants, vision_runs):
    t = tenants
    r1, r2, r3 = vision_runs
    r2.status = RunStatus.FINISHED
    r2.save()
    assert _ids(t, "params.lr < 0.01") == {"resnet-a"}
    assert _ids(t, "params.lr >= 0.01") == {"ResNet-b", "vit"}
    assert _ids(t, 'params.opt = "sgd"') == {"ResNet-b"}
    assert _ids(t, 'params.opt != "sgd"') == {"resnet-a"}  # vit has no opt: no match
    assert _ids(t, 'not params.opt = "sgd"') == {"resnet-a", "vit"}
    assert _ids(t, "params.opt = null") == {"vit"}
    assert _ids(t, "params.flag = true") == {"vit"}
    assert _ids(t, 'params.opt ~ "AD"') == {"resnet-a"}
    assert _ids(t, "metrics.val/acc.max > 0.9") == {"resnet-a"}
    assert _ids(t, "metrics.val/acc.last <= 0.4") == {"ResNet-b"}
    assert _ids(t, "metrics.val/acc.count = 3") == {"resnet-a"}
    assert _ids(t, "metrics.val/acc.last = null") == {"vit"}
    assert _ids(t, 'tags contains "baseline"') == {"resnet-a"}
    assert _ids(t, 'name ~ "resnet"') == {"resnet-a", "ResNet-b"}
    assert _ids(t, 'status = "finished"') == {"ResNet-b"}
    assert _ids(t, 'created_by = "bob"') == {"ResNet-b"}
    assert _ids(t, 'created_by != "bob"') == {"resnet-a", "vit"}
    assert _ids(t, 'created_at > "2000-01-01"') == {"resnet-a", "ResNet-b", "vit"}
    assert _ids(t, 'created_at < "2000-01-01T00:00:00Z"') == set()
    assert _ids(t, f"id = {r3.pk}") == {"vit"}
    assert _ids(t, '(params.lr < 0.01 or params.lr > 0.05) and not name ~ "b"') == {"resnet-a"}
    # a SQL-looking string is just a value
    assert _ids(t, "name = \"x' OR '1'='1\"") == set()


def test_metric_nan_and_missing(tenants, vision_runs):
    r1 = vision_runs[0]
    put_series(r1, "nanonly", [float("nan")])
    # min/max of an all-NaN series are NULL: neither "= null"-missing nor a number
    assert _ids(tenants, "metrics.nanonly.min = null") == {"resnet-a", "ResNet-b", "vit"}
    assert _ids(tenants, "metrics.nanonly.count = 1") == {"resnet-a"}
    assert _ids(tenants, "metrics.nanonly.min != 3") == set()


def test_filter_over_api_is_400_never_500(tenants, vision_runs, api):
    client = api(tenants.carol)
    url = "/api/v1/projects/acme/vision/runs/table"
    hostile = [
        "__class__ = 1",
        "_connector = 'OR'",
        "name') OR 1=1 --",
        "params.lr = 1; DROP TABLE tracker_run",
        "(" * 500,
        "x" * 5000,
        "params. = 1",
        "metrics..last > 1",
        "name ~ 5",
    ]
    for text in hostile:
        r = client.get(url, {"filter": text})
        assert r.status_code == 400, (text, r.status_code, r.content[:200])
        err = r.json()["error"]
        assert err["code"] == "invalid_filter" and err["field"] == "filter", text
        assert "position" in err and err["message"], text
    r = client.get(url, {"filter": "created_by = 'a\x00b'"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "filter"
    # dunder-looking keys are only ever values of `key = ...`: a valid filter matching nothing
    r = client.get(url, {"filter": "params.__class__.__init__ = 1 or params.pk__gt = 0"})
    assert r.status_code == 200 and r.json()["results"] == []
    for ok in (
        "metrics.loss.count >= 1e300",
        "params.lr = 99999999999999999999999999999999999",
        "id = 99999999999999999999999",
    ):
        r = client.get(url, {"filter": ok})
        assert r.status_code == 200 and r.json()["results"] == [], ok


def test_huge_and_fractional_numbers_on_integer_columns(tenants, vision_runs):
    # ints beyond bigint compare as floats instead of overflowing the database parameter
    assert _ids(tenants, "params.lr < 100000000000000000000") == {"resnet-a", "ResNet-b", "vit"}
    assert _ids(tenants, "id < 99999999999999999999999") == {"resnet-a", "ResNet-b", "vit"}
    assert _ids(tenants, "id > 99999999999999999999999") == set()
    assert _ids(tenants, "metrics.val/acc.count >= 2.5") == {"resnet-a"}
    assert _ids(tenants, "metrics.val/acc.count > 2") == {"resnet-a"}
    assert _ids(tenants, "metrics.val/acc.count <= 2.5") == {"ResNet-b"}
    assert _ids(tenants, "metrics.val/acc.count < 3") == {"ResNet-b"}
    assert _ids(tenants, "metrics.val/acc.count = 2.5") == set()
    assert _ids(tenants, "metrics.val/acc.count != 2.5") == {"resnet-a", "ResNet-b"}
