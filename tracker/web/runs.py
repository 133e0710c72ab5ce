"""Run page (tabs), compare page and the JSON/blob endpoints their scripts fetch."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .. import access
from ..models import (
    Artifact,
    ArtifactState,
    Histogram,
    Image,
    IngestJob,
    Param,
    Run,
    Series,
    SeriesKind,
    TextEntry,
    UploadFile,
)
from ..selectors import media as media_selectors
from ..services.errors import ServiceError
from ..storage import get_blob_store
from .common import Scope, int_or
from .pages import fmt
from .queries import series_json
from .scoping import scope_run, scope_runs, scoped

TABS = [
    ("charts", "Charts"),
    ("images", "Images"),
    ("histograms", "Histograms"),
    ("text", "Text"),
    ("hparams", "Hparams"),
    ("monitoring", "Monitoring"),
    ("artifacts", "Artifacts"),
    ("params", "Params"),
    ("logs", "Upload logs"),
]
# Image types we serve as such; anything else is offered as a download, never rendered.
IMAGE_MIMES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
MAX_TEXT_ROWS = 500


def group_keys(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Series keys grouped by their first path segment, like TensorBoard's tag groups."""
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for key in sorted(keys):
        prefix = key.split("/", 1)[0] if "/" in key else ""
        groups.setdefault(prefix, []).append(key)
    return [(prefix or "(top level)", ks) for prefix, ks in groups.items()]


def _series_keys(run_ids: list[int], system: bool) -> list[str]:
    qs = Series.objects.filter(run_id__in=run_ids)
    qs = qs.filter(kind=SeriesKind.SYSTEM) if system else qs.exclude(kind=SeriesKind.SYSTEM)
    return sorted(set(qs.values_list("key", flat=True)))


def _charts_ctx(scope: Scope, runs: list[Run], system: bool) -> dict[str, Any]:
    keys = _series_keys([r.pk for r in runs], system)
    return {
        "groups": group_keys(keys),
        "series_src": f"{scope.base}data/series",
        "chart_runs": ",".join(str(r.pk) for r in runs),
        "run_names": json.dumps({r.pk: r.name for r in runs}),
        "default_x": "wall" if system else "step",
    }


def _images_ctx(scope: Scope, run: Run) -> dict[str, Any]:
    tags: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    rows = (
        Image.objects.filter(run=run)
        .order_by("key", "step", "index")
        .values("id", "key", "step", "index", "width", "height", "caption")
    )
    for row in rows:
        tags.setdefault(row["key"], []).append(row)
    out = []
    for key, items in tags.items():
        out.append(
            {
                "key": key,
                "count": len(items),
                "last": items[-1],
                "srcs": json.dumps([f"{scope.base}images/{i['id']}" for i in items]),
                "steps": json.dumps([i["step"] for i in items]),
                "captions": json.dumps([i["caption"] for i in items]),
            }
        )
    return {"image_tags": out}


def _histograms_ctx(scope: Scope, run: Run) -> dict[str, Any]:
    keys = sorted(set(Histogram.objects.filter(run=run).values_list("key", flat=True)))
    return {"hist_keys": keys, "hist_src": f"{scope.base}data/histograms?run={run.pk}"}


def _text_ctx(run: Run) -> dict[str, Any]:
    rows = list(TextEntry.objects.filter(run=run).order_by("key", "-step")[: MAX_TEXT_ROWS + 1])
    groups: OrderedDict[str, list[TextEntry]] = OrderedDict()
    for t in rows[:MAX_TEXT_ROWS]:
        groups.setdefault(t.key, []).append(t)
    return {"text_groups": list(groups.items()), "text_truncated": len(rows) > MAX_TEXT_ROWS}


def _params(run: Run) -> list[tuple[str, str]]:
    return [(p.key, fmt(p.value)) for p in Param.objects.filter(run=run).order_by("key")]


def _hparams_ctx(run: Run) -> dict[str, Any]:
    metrics = Series.objects.filter(run=run, kind=SeriesKind.HPARAM).order_by("key")
    if not metrics:
        metrics = Series.objects.filter(run=run, kind=SeriesKind.METRIC).order_by("key")[:50]
    return {
        "params": _params(run),
        "hparam_metrics": [
            (s.key, fmt(s.last_value), fmt(s.min_value), fmt(s.max_value), s.last_step)
            for s in metrics
        ],
    }


def _artifacts_ctx(scope: Scope, run: Run) -> dict[str, Any]:
    return {
        "artifacts": Artifact.objects.filter(run=run).order_by("path"),
        "download_base": f"{scope.base}artifacts/",
    }


def _logs_ctx(run: Run) -> dict[str, Any]:
    """The ingest jobs that wrote this run's files, with the problems that concern them."""
    files = list(UploadFile.objects.filter(run=run).values_list("relative_path", "job_id"))
    paths = {f for f, _ in files}
    job_ids = {j for _, j in files if j}
    jobs = []
    for job in IngestJob.objects.filter(pk__in=job_ids).order_by("-created_at"):
        problems = [p for p in (job.problems or []) if not paths or p.get("file") in paths]
        jobs.append({"job": job, "problems": problems})
    return {"jobs": jobs, "upload_files": sorted(paths)}


@scoped()
def run_page(request: HttpRequest, scope: Scope, run_id: int) -> HttpResponse:
    run = scope_run(scope, run_id)
    tab = request.GET.get("tab", "charts")
    if tab not in dict(TABS):
        tab = "charts"
    ctx: dict[str, Any] = {
        "scope": scope,
        "project": scope.project,
        "run": run,
        "tab": tab,
        "tabs": TABS,
        "run_base": f"{scope.base}runs/{run.pk}/",
    }
    if tab == "charts":
        ctx.update(_charts_ctx(scope, [run], system=False))
    elif tab == "monitoring":
        ctx.update(_charts_ctx(scope, [run], system=True))
    elif tab == "images":
        ctx.update(_images_ctx(scope, run))
    elif tab == "histograms":
        ctx.update(_histograms_ctx(scope, run))
    elif tab == "text":
        ctx.update(_text_ctx(run))
    elif tab == "hparams":
        ctx.update(_hparams_ctx(run))
    elif tab == "artifacts":
        ctx.update(_artifacts_ctx(scope, run))
    elif tab == "params":
        ctx["params"] = _params(run)
    elif tab == "logs":
        ctx.update(_logs_ctx(run))
    return render(request, "web/run.html", ctx)


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


@scoped()
def compare_page(request: HttpRequest, scope: Scope) -> HttpResponse:
    runs = scope_runs(scope, request.GET.getlist("runs"))
    ids = [r.pk for r in runs]
    params: dict[str, dict[int, Any]] = {}
    for run_id, key, value in Param.objects.filter(run_id__in=ids).values_list(
        "run_id", "key", "value"
    ):
        params.setdefault(key, {})[run_id] = value
    only_diff = request.GET.get("diff") == "1"
    param_rows = []
    for key in sorted(params):
        values = [params[key].get(i) for i in ids]
        differs = len({json.dumps(v, sort_keys=True) for v in values}) > 1
        if only_diff and not differs:
            continue
        param_rows.append({"key": key, "values": [fmt(v) for v in values], "differs": differs})
    metric_rows: dict[str, dict[int, Any]] = {}
    for s in (
        Series.objects.filter(run_id__in=ids)
        .exclude(kind=SeriesKind.SYSTEM)
        .values("run_id", "key", "last_value")
    ):
        metric_rows.setdefault(s["key"], {})[s["run_id"]] = s["last_value"]
    # Parallel coordinates: numeric params and last metric values, one line per run.
    axes = [
        ("params." + k, k)
        for k in sorted(params)
        if any(_num(v) is not None for v in params[k].values())
    ]
    axes += [("metrics." + k, k) for k in sorted(metric_rows)][:12]
    pc = {
        "axes": [label for _, label in axes],
        "kinds": [name.split(".", 1)[0] for name, _ in axes],
        "runs": [
            {
                "id": r.pk,
                "name": r.name,
                "values": [
                    _num(params.get(label, {}).get(r.pk))
                    if name.startswith("params.")
                    else _num(metric_rows.get(label, {}).get(r.pk))
                    for name, label in axes
                ],
            }
            for r in runs
        ],
    }
    ctx = {
        "scope": scope,
        "project": scope.project,
        "runs": runs,
        "param_rows": param_rows,
        "only_diff": only_diff,
        "metric_rows": [
            (k, [fmt(metric_rows[k].get(i)) for i in ids]) for k in sorted(metric_rows)
        ],
        "pc_json": json.dumps(pc),
        "runs_param": ",".join(str(i) for i in ids),
    }
    if runs:
        ctx.update(_charts_ctx(scope, runs, system=False))
    return render(request, "web/compare.html", ctx)


# --- data endpoints ---------------------------------------------------------------------------


def _opt_float(v: str | None) -> float | None:
    if v in (None, ""):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@require_GET
@scoped()
def series_data(request: HttpRequest, scope: Scope) -> HttpResponse:
    """Chart data for the page's scripts: `runs=1,2&keys=a,b&x=&start=&end=&max_points=`."""
    runs = scope_runs(scope, request.GET.getlist("runs"))
    keys = [k for k in request.GET.get("keys", "").split(",") if k]
    x = request.GET.get("x", "step")
    max_points = min(max(int_or(request.GET.get("max_points"), 1000), 10), 20000)
    try:
        body = series_json(
            runs,
            keys,
            max_points=max_points,
            x=x,
            start=_opt_float(request.GET.get("start")),
            end=_opt_float(request.GET.get("end")),
        )
    except ServiceError as exc:
        return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=400)
    return HttpResponse(body, content_type="application/json")


@require_GET
@scoped()
def histogram_data(request: HttpRequest, scope: Scope) -> JsonResponse:
    run = scope_run(scope, request.GET.get("run"))
    key = request.GET.get("key", "")
    rows = (
        Histogram.objects.filter(run=run, key=key)
        .order_by("step")
        .values("step", "bucket_limits", "bucket_counts", "min", "max")
    )
    data = list(rows)
    # Very long histories: keep at most 200 evenly spaced steps (the last one always).
    if len(data) > 200:
        stride = len(data) / 200
        data = [data[int(i * stride)] for i in range(199)] + [data[-1]]
    for d in data:
        d["min"] = _num(d["min"])
        d["max"] = _num(d["max"])
        d["bucket_limits"] = [v if _num(v) is not None else None for v in d["bucket_limits"]]
    return JsonResponse({"key": key, "steps": data}, json_dumps_params={"allow_nan": False})


@require_GET
@scoped()
def image_content(request: HttpRequest, scope: Scope, image_id: int) -> HttpResponse:
    image = Image.objects.filter(pk=image_id).only("run_id", "blob_id", "mime").first()
    if image is None:
        raise access.NotVisible()
    scope_run(scope, image.run_id)
    mime = image.mime if image.mime in IMAGE_MIMES else "application/octet-stream"
    store = get_blob_store()
    response = FileResponse(store.open(image.blob_id), content_type=mime)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    # Content-addressed: the bytes behind an id never change.
    response["Cache-Control"] = "private, max-age=86400, immutable"
    if mime == "application/octet-stream":
        response["Content-Disposition"] = "attachment"
    return response


@require_GET
@scoped()
def artifact_download(request: HttpRequest, scope: Scope, artifact_id: int) -> HttpResponse:
    art = Artifact.objects.filter(pk=artifact_id).first()
    if art is None or art.state not in (ArtifactState.READY, ArtifactState.VERIFYING):
        raise access.NotVisible()
    scope_run(scope, art.run_id)
    try:
        url = media_selectors.artifact_download_url(art)
    except ServiceError:
        raise access.NotVisible() from None
    if url is not None:
        return HttpResponseRedirect(url)
    response = FileResponse(
        get_blob_store().open(art.blob_id),
        as_attachment=True,
        filename=media_selectors.artifact_filename(art),
        content_type="application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
