"""Home, workspace and project pages (the runs table)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .. import access
from ..models import Membership
from ..services.errors import ServiceError
from .common import Scope, web_principal, web_view
from .queries import chooser_columns, column_field, row_value, runs_table
from .scoping import scoped

PAGE_SIZE = 50
DEFAULT_SORT = "-created_at"


def home(request: HttpRequest) -> HttpResponse:
    p = web_principal(request)
    if p.user is None:
        return render(request, "web/home.html", {"projects": [], "workspaces": []})
    workspaces = access.visible_workspaces(p)
    projects = access.visible_projects(p).annotate(n_runs=Count("runs"))
    roles = p.workspace_roles()
    return render(
        request,
        "web/home.html",
        {
            "projects": projects,
            "workspaces": [(ws, roles.get(ws.pk)) for ws in workspaces],
        },
    )


@web_view
def workspace_page(request: HttpRequest, ws: str) -> HttpResponse:
    p = web_principal(request)
    workspace = access.get_workspace(p, ws)
    projects = access.visible_projects(p, workspace).annotate(n_runs=Count("runs"))
    members = (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("user__username")
    )
    return render(
        request,
        "web/workspace.html",
        {
            "workspace": workspace,
            "projects": projects,
            "members": members,
            "role": access.workspace_role(p, workspace),
        },
    )


def column_label(col: str) -> str:
    """`params.lr` → `lr`; `metrics.val/acc.last` → `val/acc (last)`."""
    f = column_field(col)
    if f is None:
        return col
    if f.kind == "metric":
        return f"{f.name} ({f.agg})"
    return f.name


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.6g}"
    if isinstance(value, str | int):
        return str(value)
    import json

    return json.dumps(value)


def _query(base: dict[str, Any], **changes: Any) -> str:
    q = {k: v for k, v in {**base, **changes}.items() if v not in (None, "", [])}
    return "?" + urlencode(q, doseq=True) if q else "?"


def _columns(request: HttpRequest) -> list[str]:
    cols: list[str] = []
    for item in request.GET.getlist("cols"):
        cols.extend(c.strip() for c in item.split(",") if c.strip())
    return list(dict.fromkeys(cols))[:40]


def runs_context(request: HttpRequest, scope: Scope) -> dict[str, Any]:
    """State of the runs table, entirely from the query string (so a link reproduces it)."""
    filter_expr = request.GET.get("filter", "")[:2000]
    sort = request.GET.get("sort", DEFAULT_SORT)[:300] or DEFAULT_SORT
    cols = _columns(request)
    cursor = request.GET.get("cursor") or None
    error = ""
    try:
        page = runs_table(
            scope.principal,
            scope.project,
            filter_expr=filter_expr,
            sort=sort,
            columns=cols,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
        rows, total = page.rows, page.total or 0
        next_cursor, prev_cursor = page.next_cursor, page.prev_cursor
    except ServiceError as exc:
        # A filter, sort or column the language rejects: say where, keep the inputs.
        error = exc.message
        rows, total, next_cursor, prev_cursor = [], 0, None, None
    state = {"filter": filter_expr, "sort": sort if sort != DEFAULT_SORT else "", "cols": cols}
    headers = []
    for col, label in (
        [("name", "Name"), ("status", "Status")]
        + [(c, column_label(c)) for c in cols]
        + [("created_at", "Created")]
    ):
        active = sort.lstrip("-") == col
        desc = sort.startswith("-")
        new_sort = col if (active and desc) else f"-{col}"
        headers.append(
            {
                "col": col,
                "label": label,
                "url": scope.base + _query(state, sort=new_sort),
                "active": active,
                "dir": ("desc" if desc else "asc") if active else "",
                "extra": col in cols,
            }
        )
    fields = [column_field(c) for c in cols]
    table = [{**row, "cells": [fmt(row_value(row, f)) for f in fields]} for row in rows]
    return {
        "rows": table,
        "headers": headers,
        "cols": cols,
        "filter": filter_expr,
        "sort": state["sort"],
        "total": total,
        "error": error,
        "next_url": scope.base + _query(state, cursor=next_cursor) if next_cursor else "",
        "prev_url": scope.base + _query(state, cursor=prev_cursor) if prev_cursor else "",
        "cols_qs": urlencode({"cols": cols}, doseq=True),
    }


@scoped()
def columns_fragment(request: HttpRequest, scope: Scope) -> HttpResponse:
    """The column chooser, loaded when opened: listing every param and metric key of a big
    project costs more than the table page itself, so the table does not wait for it."""
    cols = _columns(request)
    available = chooser_columns(scope.principal, scope.project)
    known = {c for c, _ in available["params"]} | {c for c, _ in available["metrics"]}
    return render(
        request,
        "web/partials/columns.html",
        {
            "cols": cols,
            "available_params": available["params"],
            "available_metrics": available["metrics"],
            "missing": [c for c in cols if c not in known],
        },
    )


@scoped()
def project_page(request: HttpRequest, scope: Scope) -> HttpResponse:
    ctx = runs_context(request, scope)
    ctx["scope"] = scope
    ctx["project"] = scope.project
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "runs-panel":
        return render(request, "web/partials/runs_panel.html", ctx)
    ctx["public_url"] = request.build_absolute_uri("/").rstrip("/") or settings.TRACKER_PUBLIC_URL
    ctx["has_runs"] = bool(ctx["rows"]) or bool(ctx["filter"]) or ctx["total"] > 0
    ctx["upload_endpoint"] = (
        f"/api/v1/projects/{scope.project.workspace.slug}/{scope.project.slug}/uploads/archive"
    )
    return render(request, "web/project.html", ctx)
