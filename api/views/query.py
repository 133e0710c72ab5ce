"""Read endpoints (issue 6): runs table, columns, series, keys, media per step, hparams, exports.

Series responses are encoded with orjson straight from numpy arrays (the stdlib encoder spends
~100 ms on 100k points); non-finite values go out as "NaN" / "Infinity" / "-Infinity".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from tracker import access
from tracker.access import NotVisible
from tracker.models import Run, Series
from tracker.selectors import exports, hparams, media_query, runs_table, series_query

from ..serializers import query as s
from .base import TrackerView


class _IgnoreFormatParam(BaseContentNegotiation):
    """Our `?format=csv|jsonl|json` picks an export format, not a DRF renderer."""

    def select_parser(self, request, parsers):  # type: ignore[no-untyped-def]
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):  # type: ignore[no-untyped-def]
        return renderers[0], renderers[0].media_type


def _json(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(series_query.dumps(data), status=status, content_type="application/json")


def _clean(obj: Any) -> Any:
    return exports._clean(obj)


class QueryView(TrackerView):
    def query(self, serializer_cls: type) -> dict[str, Any]:
        return self.validated(serializer_cls, data=self.request.query_params)


# --- runs table -------------------------------------------------------------------------------
class RunsTableView(QueryView):
    @extend_schema(parameters=[s.RunsTableIn], responses=s.RunsTableOut)
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        q = self.query(s.RunsTableIn)
        page = runs_table.runs_table(
            self.principal,
            proj,
            filter_expr=q["filter"],
            sort=q["sort"],
            columns=q.get("columns"),
            limit=q["limit"],
            cursor=q.get("cursor") or None,
            with_total=q["total"],
        )

        def link(cursor: str | None) -> str | None:
            if cursor is None:
                return None
            params = {k: v for k, v in request.query_params.items() if k != "cursor"}
            params["cursor"] = cursor
            return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")

        return Response(
            {
                "results": _clean(page.rows),
                "columns": page.columns,
                "sort": page.sort,
                "total": page.total,
                "next_cursor": page.next_cursor,
                "prev_cursor": page.prev_cursor,
                "next": link(page.next_cursor),
                "previous": link(page.prev_cursor),
            }
        )


class ColumnsView(QueryView):
    @extend_schema(responses=s.ColumnsOut)
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        return Response(runs_table.discover_columns(proj, principal=self.principal))


# --- series -----------------------------------------------------------------------------------
def _series_response(runs: list[Run], q: dict[str, Any]) -> HttpResponse:
    items = series_query.query_series_arrays(
        runs,
        q["keys"],
        max_points=q["max_points"],
        x=q["x"],
        start=q.get("from"),
        end=q.get("to"),
    )
    return _json({"series": series_query.series_payload(items)})


class RunSeriesView(QueryView):
    @extend_schema(parameters=[s.SeriesIn], responses=s.SeriesListOut)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        return _series_response([run], self.query(s.SeriesIn))


class ProjectSeriesView(QueryView):
    @extend_schema(parameters=[s.MultiSeriesIn], responses=s.SeriesListOut)
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        q = self.query(s.MultiSeriesIn)
        runs = access.get_runs(self.principal, q["runs"])
        if any(r.project_id != proj.pk for r in runs):
            raise NotVisible()
        by_id = {r.pk: r for r in runs}
        ordered = [by_id[i] for i in dict.fromkeys(q["runs"])]
        return _series_response(ordered, q)


class RunKeysView(QueryView):
    @extend_schema(responses=s.KeysOut)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        rows = Series.objects.filter(run=run).order_by("key")
        keys = [
            {
                "key": r.key,
                "kind": r.kind,
                "count": r.count,
                "first_step": r.first_step,
                "last_step": r.last_step,
                "last_value": r.last_value,
                "min": r.min_value,
                "max": r.max_value,
                "first_wall": r.first_wall,
                "last_wall": r.last_wall,
            }
            for r in rows
        ]
        return _json({"keys": _clean(keys)})


# --- media per step ---------------------------------------------------------------------------
class _MediaView(QueryView):
    kind = ""

    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        q = self.query(s.MediaIn)
        if not q.get("key"):
            return Response({"tags": media_query.media_tags(run, self.kind)})
        data = media_query.media_entries(run, self.kind, q["key"], limit=q["limit"])
        return _json(_clean(data))


_MEDIA_DOC = OpenApiResponse(
    description='without key: {"tags": [{"key", "count", "first_step", "last_step"}]}; '
    'with key: {"key", "total_steps", "sampled", "entries": [...]} in step order'
)


class HistogramsView(_MediaView):
    kind = "histograms"

    @extend_schema(parameters=[s.MediaIn], responses=_MEDIA_DOC)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().get(request, run_id)


class TextView(_MediaView):
    kind = "text"

    @extend_schema(parameters=[s.MediaIn], responses=_MEDIA_DOC)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().get(request, run_id)


class PRCurvesView(_MediaView):
    kind = "pr_curves"

    @extend_schema(parameters=[s.MediaIn], responses=_MEDIA_DOC)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        return super().get(request, run_id)


# --- hparams ------------------------------------------------------------------------------------
class HparamsView(QueryView):
    @extend_schema(parameters=[s.HparamsIn], responses=s.HparamsOut)
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        q = self.query(s.HparamsIn)
        data = hparams.hparams_table(self.principal, proj, metrics=q.get("metrics"))
        return _json(_clean(data))


# --- exports ------------------------------------------------------------------------------------
def _stream(pieces: Any, content_type: str, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(pieces, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


class SeriesExportView(QueryView):
    content_negotiation_class = _IgnoreFormatParam

    @extend_schema(
        parameters=[s.SeriesExportIn],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
        },
    )
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        q = self.query(s.SeriesExportIn)
        keys = q.get("keys") or None
        if q["format"] == "csv":
            body = exports._buffered(exports.iter_series_csv(run, keys))
            return _stream(body, "text/csv; charset=utf-8", f"run-{run.pk}-series.csv")
        body = exports._buffered(exports.iter_series_jsonl(run, keys))
        return _stream(body, "application/x-ndjson", f"run-{run.pk}-series.jsonl")


class RunExportView(QueryView):
    @extend_schema(responses={(200, "application/json"): OpenApiTypes.OBJECT})
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        run = Run.objects.select_related("created_by").get(pk=run.pk)
        return _stream(exports.iter_run_export(run), "application/json", f"run-{run.pk}.json")


class ProjectExportView(QueryView):
    content_negotiation_class = _IgnoreFormatParam

    @extend_schema(
        parameters=[s.ProjectExportIn],
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        self.query(s.ProjectExportIn)
        body = exports.iter_project_export(self.principal, proj)
        return _stream(body, "application/json", f"{proj.workspace.slug}-{proj.slug}.json")


class ProjectZipView(QueryView):
    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        body = exports.iter_project_zip(self.principal, proj)
        return _stream(body, "application/zip", f"{proj.workspace.slug}-{proj.slug}.zip")


_ = OpenApiParameter
