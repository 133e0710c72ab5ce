"""Benchmark: server time of the web pages on big data.

    .venv/bin/python bench/web_pages.py [--runs 10000] [--series 100] [--points 100000] [--reps 7]

Builds (once; reused while the sizes match) PostgreSQL database `tracker_bench_web` holding a
project of 10,000 runs x 20 params x 5 metric summaries, and one run with 100 series of
100,000 points each (stored through tracker.services.metrics.append_points: real chunks).
Then times, in-process through Django's test client (the whole request: middleware, access
checks, selectors, templates, JSON), the project page (default, and sorted + filtered with
param/metric columns, and its htmx partial), the run page (charts tab) and the chart data
requests that page's script makes (100 series in batches of 8 keys, 1,000 points each), plus
one zoom request at full resolution. Printed as a table of p50/p95 milliseconds.

The reference line is a bare `SELECT 1` round trip through the same client stack (/healthz),
so the numbers read as multiples of the fixed per-request cost on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_owner, ensure_database  # noqa: E402

DB_NAME = "tracker_bench_web"


def setup_django() -> None:
    os.environ["DATABASE_URL"] = ensure_database(DB_NAME)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
    os.environ.setdefault("TRACKER_BLOB_DIR", "/tmp/tracker_bench_web_blobs")
    import django

    django.setup()


def build(n_runs: int, n_series: int, n_points: int) -> dict:
    import numpy as np
    from django.db import transaction

    from tracker.models import Param, Project, Run, Series
    from tracker.services.metrics import append_points
    from tracker.services.runs import typed_param
    from tracker.services.series_codec import Points

    user, ws = bench_owner()
    project, _ = Project.objects.get_or_create(workspace=ws, slug="big")
    chart_project, _ = Project.objects.get_or_create(workspace=ws, slug="charts")

    if Run.objects.filter(project=project).count() != n_runs:
        print(f"building {n_runs} runs x 20 params x 5 metrics ...", flush=True)
        t0 = time.perf_counter()
        Run.objects.filter(project=project).delete()
        rng = np.random.default_rng(0)
        with transaction.atomic():
            runs = Run.objects.bulk_create(
                [
                    Run(
                        project=project,
                        name=f"run-{i:05d}",
                        status="finished",
                        created_by=user,
                        tags=["sweep", f"g{i % 10}"],
                    )
                    for i in range(n_runs)
                ],
                batch_size=2000,
            )
            params = []
            series = []
            for r in runs:
                for j in range(20):
                    v = float(rng.random()) if j % 4 else f"opt{j}-{r.pk % 3}"
                    kind, num, s = typed_param(v)
                    params.append(
                        Param(
                            run=r, key=f"p{j:02d}", value=v, type=kind, value_num=num, value_str=s
                        )
                    )
                for k in range(5):
                    last = float(rng.random())
                    series.append(
                        Series(
                            run=r,
                            key=f"m{k}",
                            count=100,
                            first_step=0,
                            last_step=99,
                            last_value=last,
                            min_value=last / 2,
                            max_value=last * 2,
                            first_wall=1.7e9,
                            last_wall=1.7e9 + 99,
                        )
                    )
            Param.objects.bulk_create(params, batch_size=5000)
            Series.objects.bulk_create(series, batch_size=5000)
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)

    chart_run = Run.objects.filter(project=chart_project, name="big-run").first()
    want = n_series * n_points
    have = (
        sum(Series.objects.filter(run=chart_run).values_list("count", flat=True))
        if chart_run
        else 0
    )
    if have != want:
        print(f"building 1 run x {n_series} series x {n_points} points ...", flush=True)
        t0 = time.perf_counter()
        if chart_run:
            chart_run.delete()
        chart_run = Run.objects.create(project=chart_project, name="big-run", created_by=user)
        steps = np.arange(n_points, dtype=np.int64)
        walls = 1.7e9 + steps.astype(np.float64) * 0.5
        rng = np.random.default_rng(1)
        for s in range(n_series):
            prefix = ("train", "val", "grad", "lr", "sys")[s % 5]
            values = np.cumsum(rng.standard_normal(n_points)) + 100
            values[rng.integers(0, n_points, 20)] = np.nan
            append_points(chart_run, {f"{prefix}/metric{s:03d}": Points.of(steps, walls, values)})
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)
    from django.db import connection

    with connection.cursor() as c:
        # Steady state: autovacuum would analyze (planner statistics) and set the visibility
        # map soon after a bulk load; the benchmark server may run with autovacuum off, and
        # without statistics the planner takes 10,000 runs for 5.
        c.execute("VACUUM ANALYZE")
    return {"user": user, "project": project, "chart_project": chart_project, "run": chart_run}


def timeit(client, url: str, reps: int, headers: dict | None = None) -> tuple[float, float, int]:
    times = []
    size = 0
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        resp = client.get(url, **(headers or {}))
        dt = time.perf_counter() - t0
        assert resp.status_code == 200, (url, resp.status_code)
        size = len(resp.content)
        times.append(dt * 1000)
    times = times[1:]  # the first one warms caches
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    setup_django()
    data = build(args.runs, args.series, args.points)
    from django.test import Client

    from tracker.models import Series

    client = Client()
    client.force_login(data["user"])
    run = data["run"]
    keys = list(Series.objects.filter(run=run).order_by("key").values_list("key", flat=True))
    rows: list[tuple[str, float, float, int]] = []

    def add(label: str, url: str, reps: int = args.reps, **headers) -> None:
        p50, p95, size = timeit(client, url, reps, headers)
        rows.append((label, p50, p95, size))

    add("reference: /healthz (SELECT 1)", "/healthz")
    add(f"project page, {args.runs} runs (default sort)", "/bench/big/")
    big = "/bench/big/?sort=-metrics.m1.last&filter=params.p01 > 0.5 and metrics.m2.last < 0.8&cols=params.p01,params.p02,metrics.m1.last,metrics.m2.max"
    add("project page, sort+filter+4 columns", big)
    add("  same, htmx partial", big, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="runs-panel")
    import re

    first = client.get("/bench/big/?sort=name").content.decode()
    nxt = re.search(r'id="next-page"', first) and re.search(r'href="([^"]*cursor=[^"]*)"', first)
    assert nxt, "no next page link"
    add("project page, page 2 (keyset cursor)", nxt.group(1).replace("&amp;", "&"))
    add("  column chooser (loaded when opened)", "/bench/big/columns")
    run_url = f"/bench/charts/runs/{run.pk}/"
    add(f"run page, charts tab ({len(keys)} series)", run_url)
    # The charts script asks for the visible charts in batches of 8 keys; time them all.
    batches = [keys[i : i + 8] for i in range(0, len(keys), 8)]
    t_all = []
    for _ in range(max(3, args.reps // 2)):
        t0 = time.perf_counter()
        for b in batches:
            r = client.get(
                f"/bench/charts/data/series?runs={run.pk}&keys={','.join(b)}&max_points=1000"
            )
            assert r.status_code == 200
        t_all.append((time.perf_counter() - t0) * 1000)
    rows.append(
        (
            f"  chart data, all {len(keys)} series x {args.points} pts ({len(batches)} requests)",
            statistics.median(t_all),
            max(t_all),
            0,
        )
    )
    add(
        "  chart data, one batch of 8 series",
        f"/bench/charts/data/series?runs={run.pk}&keys={','.join(batches[0])}&max_points=1000",
    )
    add(
        "  zoom: 1 series, 10,000-step range, full res",
        f"/bench/charts/data/series?runs={run.pk}&keys={keys[0]}&start=40000&end=50000&max_points=20000",
    )
    add(
        "  x=wall, one batch of 8 series",
        f"/bench/charts/data/series?runs={run.pk}&keys={','.join(batches[0])}&x=wall",
    )

    ref = rows[0][1]
    print()
    print(f"{'request':64} {'p50 ms':>9} {'p95 ms':>9} {'x ref':>7} {'bytes':>10}")
    print("-" * 103)
    for label, p50, p95, size in rows:
        print(f"{label:64} {p50:9.1f} {p95:9.1f} {p50 / ref:7.1f} {size:10d}")


if __name__ == "__main__":
    main()
