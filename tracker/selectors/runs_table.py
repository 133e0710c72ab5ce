"""The runs table: filter, sort by any column, keyset pagination, chosen param/metric columns.

Pagination is keyset, not offset: the cursor carries the sort values of the last (or first)
row shown plus its id, so page 200 costs what page 1 costs. Sorting on a param or metric joins
that one key through a FilteredRelation (LEFT JOIN ... ON key = <literal>) rather than a
correlated subquery per run, which lets PostgreSQL hash-join and top-N sort. NULLs (runs
without the param/metric) always come last, in both directions.

Queries per page, whatever its size: the page itself, one for the params of the shown rows, one
for their metrics, and the total count (when asked for).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core import signing
from django.db import connection
from django.db.models import F, FilteredRelation, OuterRef, Q, QuerySet, Subquery

from .. import access
from ..access import Principal
from ..models import ColumnKey, ColumnKeyKind, Param, Project, Run, Series
from ..services.errors import ServiceError
from .filtering import METRIC_AGGS, RUN_FIELDS, Field, FilterError, filter_q, parse_column

BASE_COLUMNS = ["name", "status", "tags", "created_by", "created_at"]
SORTABLE_RUN_FIELDS = {"id", "name", "status", "source", "created_by", "created_at"}
MAX_LIMIT = 1000
MAX_COLUMNS = 200
_CURSOR_SALT = "tracker.runs_table.cursor"


@dataclass
class RunsPage:
    rows: list[dict]
    next_cursor: str | None
    prev_cursor: str | None
    columns: list[str]
    total: int | None
    sort: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _OrderCol:
    alias: str  # an annotation name we chose (never user text)
    desc: bool
    nulls_last: bool = True

    def flipped(self) -> _OrderCol:
        return _OrderCol(self.alias, not self.desc, not self.nulls_last)

    def order_expr(self):  # type: ignore[no-untyped-def]
        nulls = {"nulls_last": True} if self.nulls_last else {"nulls_first": True}
        return F(self.alias).desc(**nulls) if self.desc else F(self.alias).asc(**nulls)


def parse_columns(columns: list[str] | None) -> list[Field]:
    """Validate the requested columns (duplicates dropped, order kept)."""
    if columns is None:
        columns = BASE_COLUMNS
    if len(columns) > MAX_COLUMNS:
        raise ServiceError(f"At most {MAX_COLUMNS} columns.", field="columns")
    out: list[Field] = []
    for text in columns:
        text = text.strip()
        if not text:
            continue
        try:
            f = parse_column(text)
        except FilterError as e:
            raise ServiceError(f"Bad column {text[:100]!r}: {e.message}", field="columns") from None
        if f not in out:
            out.append(f)
    return out


def _parse_sort(sort: str) -> tuple[Field, bool]:
    text = (sort or "-created_at").strip()
    desc = text.startswith("-")
    text = text.lstrip("-+").strip()
    try:
        f = parse_column(text)
    except FilterError as e:
        raise ServiceError(f"Bad sort column: {e.message}", field="sort") from None
    if f.kind == "run" and f.name not in SORTABLE_RUN_FIELDS:
        allowed = ", ".join(sorted(SORTABLE_RUN_FIELDS))
        raise ServiceError(
            f"Cannot sort by {f.name}; sort by {allowed}, params.<key> or metrics.<key>.<agg>",
            field="sort",
        )
    return f, desc


def _apply_sort(qs: QuerySet[Run], f: Field, desc: bool) -> tuple[QuerySet[Run], list[_OrderCol]]:
    """Annotate the sort values under fixed aliases; returns the order columns (id last)."""
    if f.kind == "run":
        path = RUN_FIELDS[f.name][0]
        qs = qs.annotate(sort0=F(path))
        cols = [_OrderCol("sort0", desc)]
    elif f.kind == "param":
        qs = qs.annotate(_sortp=FilteredRelation("params", condition=Q(params__key=f.name)))
        # Numbers order numerically first; string values follow, ordered as text.
        qs = qs.annotate(sort0=F("_sortp__value_num"), sort1=F("_sortp__value_str"))
        cols = [_OrderCol("sort0", desc), _OrderCol("sort1", desc)]
    else:
        col = METRIC_AGGS[f.agg or "last"]
        qs = qs.annotate(_sorts=FilteredRelation("series", condition=Q(series__key=f.name)))
        qs = qs.annotate(sort0=F(f"_sorts__{col}"))
        cols = [_OrderCol("sort0", desc)]
    qs = qs.annotate(sortid=F("id"))
    return qs, [*cols, _OrderCol("sortid", desc)]


def _after(cols: list[_OrderCol], values: list[Any]) -> Q:
    """Rows strictly after `values` in the order given by `cols` (keyset condition)."""
    total = Q(pk__in=[])
    equal_so_far = Q()
    for col, v in zip(cols, values, strict=True):
        name = col.alias
        if v is None:
            strict = Q(**{f"{name}__isnull": False}) if not col.nulls_last else None
            equal = Q(**{f"{name}__isnull": True})
        else:
            strict = Q(**{f"{name}__{'lt' if col.desc else 'gt'}": v})
            if col.nulls_last:
                strict |= Q(**{f"{name}__isnull": True})
            equal = Q(**{name: v})
        if strict is not None:
            total |= equal_so_far & strict
        equal_so_far &= equal
    return total


_ROW_FIELDS = ("id", "name", "status", "tags", "created_at", "created_by__username")


def _grouped_page(
    qs: QuerySet[Run], order: list[_OrderCol], values: list[Any] | None, n: int
) -> list[dict]:
    """The first `n` rows of `qs` in `order` after the keyset `values`, in one statement.

    Sorting by a param or metric LEFT JOINs that key, and ORDER BY on the nullable side of an
    outer join cannot use an index: PostgreSQL joins every run of the project and sorts them
    (~25 ms at 10k runs). So the rows are split by which sort columns are NULL (metric: has
    a value / has none; param: number / string / neither). Inside a group the leading sort
    column is never NULL, the join is inner, and the plan walks the (key, value, run_id) index
    in order and stops after `n` rows. Groups run in the order they appear on the page, each
    gated by a one-time filter on the row count of the ones before it, so a page that the
    first group fills never evaluates the others (e.g. "runs without this metric").
    """
    cols, idcol = order[:-1], order[-1]
    # Group j: columns before j are NULL, column j is not (j == len(cols): all NULL).
    # With NULLS LAST the groups come in order 0..k; flipped (NULLS FIRST), k..0.
    groups = list(range(len(cols) + 1))
    if not cols[0].nulls_last:
        groups.reverse()
    start = 0
    if values is not None:
        at = next((j for j, v in enumerate(values[:-1]) if v is not None), len(cols))
        start = groups.index(at)
    parts: list[tuple[str, tuple]] = []
    for pos, j in enumerate(groups[start:]):
        cond = Q()
        for c in cols[:j]:
            cond &= Q(**{f"{c.alias}__isnull": True})
        rest = [*cols[j:], idcol]
        if j < len(cols):
            cond &= Q(**{f"{cols[j].alias}__isnull": False})
        if pos == 0 and values is not None:
            tail = values[j:]
            cond &= _after(rest, tail)
            if j < len(cols):
                # Redundant with _after's OR, but a plain range the index scan can start at.
                lookup = "lte" if rest[0].desc else "gte"
                cond &= Q(**{f"{rest[0].alias}__{lookup}": tail[0]})
        exprs = []
        for i, c in enumerate(rest):
            if i == 0 and j < len(cols):
                # Never NULL in this group: plain ASC/DESC, the order a btree scan yields.
                exprs.append(F(c.alias).desc() if c.desc else F(c.alias).asc())
            else:
                exprs.append(c.order_expr())
        part = qs.filter(cond).order_by(*exprs).values(*_ROW_FIELDS, *(c.alias for c in order))
        parts.append(part[:n].query.sql_with_params())
    # Only ORM-compiled SQL (its values stay parameters), fixed CTE names and our own aliases
    # are interpolated below; no request text reaches the string.
    ctes, params = [], []
    for i, (sql, p) in enumerate(parts):
        if i == 0:
            ctes.append(f"g0 AS MATERIALIZED ({sql})")
        else:
            before = " + ".join(f"(SELECT count(*) FROM g{k})" for k in range(i))  # noqa: S608
            ctes.append(f"g{i} AS MATERIALIZED (SELECT * FROM ({sql}) t WHERE {before} < %s)")  # noqa: S608
        params.extend(p)
        if i:
            params.append(n)
    union = " UNION ALL ".join(f"SELECT * FROM g{i}" for i in range(len(parts)))  # noqa: S608
    order_sql = ", ".join(
        f'"{c.alias}" {"DESC" if c.desc else "ASC"} NULLS {"LAST" if c.nulls_last else "FIRST"}'
        for c in order
    )
    sql = f"WITH {', '.join(ctes)} {union} ORDER BY {order_sql} LIMIT %s"
    params.append(n)
    names = [*_ROW_FIELDS, *(c.alias for c in order)]
    tags = Run._meta.get_field("tags")
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for r in rows:
        r["tags"] = tags.from_db_value(r["tags"], None, connection)  # type: ignore[attr-defined]
    return rows


def _encode_value(v: Any) -> Any:
    return {"dt": v.isoformat()} if isinstance(v, datetime) else v


def _decode_value(v: Any) -> Any:
    if isinstance(v, dict) and "dt" in v:
        return datetime.fromisoformat(v["dt"])
    return v


def _sort_fingerprint(sort: str, filter_expr: str) -> str:
    return hashlib.sha256(f"{sort}\x00{filter_expr}".encode()).hexdigest()[:16]


def _make_cursor(direction: str, values: list[Any], fingerprint: str) -> str:
    payload = {"d": direction, "v": [_encode_value(v) for v in values], "f": fingerprint}
    return signing.dumps(payload, salt=_CURSOR_SALT, compress=True)


def _read_cursor(cursor: str, fingerprint: str, n: int) -> tuple[str, list[Any]]:
    try:
        payload = signing.loads(cursor, salt=_CURSOR_SALT)
        direction, values, fp = payload["d"], payload["v"], payload["f"]
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise ServiceError("Invalid cursor.", field="cursor", code="invalid_cursor") from None
    if fp != fingerprint:
        raise ServiceError(
            "This cursor belongs to another sort or filter; start again from the first page.",
            field="cursor",
            code="invalid_cursor",
        )
    if direction not in ("n", "p") or not isinstance(values, list) or len(values) != n:
        raise ServiceError("Invalid cursor.", field="cursor", code="invalid_cursor")
    try:
        return direction, [_decode_value(v) for v in values]
    except (ValueError, TypeError):
        raise ServiceError("Invalid cursor.", field="cursor", code="invalid_cursor") from None


def runs_table(
    principal: Principal,
    project: Project,
    *,
    filter_expr: str = "",
    sort: str = "-created_at",
    columns: list[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    with_total: bool = True,
) -> RunsPage:
    """One page of the runs table of a project already resolved with access.get_project."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ServiceError(f"limit must be between 1 and {MAX_LIMIT}.", field="limit")
    fields = parse_columns(columns)
    sort_field, desc = _parse_sort(sort)
    cond = filter_q(filter_expr or "")

    base = access.visible_runs(principal, project)
    if cond is not None:
        base = base.filter(cond)
    qs, order = _apply_sort(base, sort_field, desc)
    fingerprint = _sort_fingerprint(f"{'-' if desc else ''}{sort_field.label}", filter_expr or "")

    direction = "n"
    values: list[Any] | None = None
    if cursor:
        direction, values = _read_cursor(cursor, fingerprint, len(order))
        if direction == "p":
            order = [c.flipped() for c in order]
    aliases = [c.alias for c in order]
    if sort_field.kind != "run" and connection.vendor == "postgresql":
        rows = _grouped_page(qs, order, values, limit + 1)
    else:
        if values is not None:
            qs = qs.filter(_after(order, values))
        rows = list(
            qs.order_by(*(c.order_expr() for c in order)).values(*_ROW_FIELDS, *aliases)[
                : limit + 1
            ]
        )
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "p":
        rows.reverse()
        order = [c.flipped() for c in order]
        aliases = [c.alias for c in order]

    next_cursor = prev_cursor = None
    if rows:
        if direction == "n":
            has_next, has_prev = more, cursor is not None
        else:
            has_next, has_prev = True, more
        if has_next:
            next_cursor = _make_cursor("n", [rows[-1][a] for a in aliases], fingerprint)
        if has_prev:
            prev_cursor = _make_cursor("p", [rows[0][a] for a in aliases], fingerprint)

    out_rows = _build_rows(rows, fields)
    total = base.count() if with_total else None
    return RunsPage(
        rows=out_rows,
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
        columns=[f.label for f in fields],
        total=total,
        sort=f"{'-' if desc else ''}{sort_field.label}",
    )


def _build_rows(rows: list[dict], fields: list[Field]) -> list[dict]:
    ids = [r["id"] for r in rows]
    param_keys = [f.name for f in fields if f.kind == "param"]
    metric_fields = [f for f in fields if f.kind == "metric"]
    params: dict[int, dict[str, Any]] = {i: {} for i in ids}
    metrics: dict[int, dict[str, Any]] = {i: {} for i in ids}
    if ids and param_keys:
        for run_id, key, value in Param.objects.filter(
            run_id__in=ids, key__in=param_keys
        ).values_list("run_id", "key", "value"):
            params[run_id][key] = value
    if ids and metric_fields:
        want: dict[str, list[str]] = {}
        for f in metric_fields:
            want.setdefault(f.name, []).append(f.agg or "last")
        cols = sorted({METRIC_AGGS[a] for aggs in want.values() for a in aggs})
        for row in Series.objects.filter(run_id__in=ids, key__in=list(want)).values(
            "run_id", "key", *cols
        ):
            for agg in want[row["key"]]:
                metrics[row["run_id"]][f"{row['key']}.{agg}"] = row[METRIC_AGGS[agg]]
    out = []
    for r in rows:
        rid = r["id"]
        out.append(
            {
                "id": rid,
                "name": r["name"],
                "status": r["status"],
                "tags": r["tags"],
                "created_by": r["created_by__username"],
                "created_at": r["created_at"],
                "params": {k: params[rid].get(k) for k in param_keys},
                "metrics": {
                    f"{f.name}.{f.agg}": metrics[rid].get(f"{f.name}.{f.agg}")
                    for f in metric_fields
                },
            }
        )
    return out


def discover_columns(project: Project, *, principal: Principal | None = None) -> dict:
    """Param and metric keys present in the project (in the runs `principal` can see)."""
    runs = (
        access.visible_runs(principal, project)
        if principal is not None
        else Run.objects.filter(project=project)
    )
    run_ids = runs.values("id")
    if connection.vendor == "postgresql":
        params = _present_keys(project, ColumnKeyKind.PARAM, Param, run_ids)
        metrics = _present_keys(project, ColumnKeyKind.METRIC, Series, run_ids)
    else:  # no key registry off PostgreSQL (see migration 0002): DISTINCT over every row
        params = list(
            Param.objects.filter(run_id__in=run_ids)
            .order_by("key")
            .values_list("key", flat=True)
            .distinct()
        )
        metrics = list(
            Series.objects.filter(run_id__in=run_ids)
            .order_by("key")
            .values_list("key", flat=True)
            .distinct()
        )
    return {
        "fields": BASE_COLUMNS,
        "params": params,
        "metrics": metrics,
        "aggregates": list(METRIC_AGGS),
    }


def _present_keys(
    project: Project, kind: str, model: type[Param] | type[Series], run_ids: QuerySet
) -> list[str]:
    """Keys of `kind` the project's key registry lists that some visible run still has.

    The registry (ColumnKey, kept by triggers) is small: one row per key, not per run. It can
    hold keys of deleted runs, and a run-scoped share link sees one run only, so each candidate
    is re-checked with an EXISTS that stops at the first matching row. A DISTINCT over all the
    project's params instead reads every (run, key) row: ~125 ms at 10k runs x 20 params.
    """
    # A scalar subquery with LIMIT 1, not EXISTS: PostgreSQL flattens EXISTS into a semi-join
    # that hashes every row of the project; a subplan per candidate stops at the first hit.
    one = model.objects.filter(key=OuterRef("key"), run_id__in=run_ids).values("run_id")[:1]
    return list(
        ColumnKey.objects.filter(project=project, kind=kind)
        .annotate(hit=Subquery(one))
        .filter(hit__isnull=False)
        .order_by("key")
        .values_list("key", flat=True)
        .distinct()
    )
