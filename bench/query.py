"""Benchmark: reading data back (issue 6) on PostgreSQL.

    .venv/bin/python bench/query.py [--fresh] [--repeat 30]

Database `tracker_bench_query` (created and migrated when missing; data generated once with
append_points / bulk_create and reused, `--fresh` rebuilds it):
  - one run with a 1,000,000-point series, one with a 100,000-point series;
  - 10,000 runs x 20 params x 5 metrics (summary columns) in one project.
Measured:
  1. chart query 1M -> 1,000 points (min/max per bucket): selector + JSON encode in process
     ("server time"), and the same request over HTTP to a gunicorn subprocess on 127.0.0.1.
     Reference: a plain numpy decode (series_codec.decode) of the same chunks already in memory.
  2. full-resolution read of the 100k series over HTTP (max_points=100000).
     Reference: plain numpy decode of its chunks.
  3. runs table, 10,000 runs: filter on a param and a metric, sort by a metric, first page and
     a deep page (page 60, by cursor). Reference: a plain `SELECT ... ORDER BY created_at
     DESC LIMIT 50` of the same project.
  4. full CSV export of the 1M series (in a fresh child process): rows/s and peak RSS.
     Reference: the child's RSS before exporting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import PG, Deployment, bench_owner, ensure_database  # noqa: E402

DB_NAME = "tracker_bench_query"
DB_URL = f"{PG}/{DB_NAME}"
N_BIG, N_MID = 1_000_000, 100_000
N_RUNS, N_PARAMS, N_METRICS = 10_000, 20, 5


def setup_django() -> None:
    os.environ["DATABASE_URL"] = DB_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    import django

    django.setup()


def seed() -> dict:
    """Create the data once; returns ids."""
    import numpy as np

    from tracker.models import Param, ParamType, Project, Run, Series
    from tracker.services.metrics import append_points
    from tracker.services.series_codec import Points

    user, ws = bench_owner()
    proj, created = Project.objects.get_or_create(workspace=ws, slug="q")
    series_proj, _ = Project.objects.get_or_create(workspace=ws, slug="series")
    if created or not Run.objects.filter(project=proj).exists():
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        runs = Run.objects.bulk_create(
            [
                Run(
                    project=proj,
                    name=f"run-{i:05d}",
                    created_by=user,
                    tags=["b"] if i % 10 == 0 else [],
                )
                for i in range(N_RUNS)
            ],
            batch_size=2000,
        )
        params = []
        for r in runs:
            vals = rng.random(N_PARAMS)
            for p in range(N_PARAMS):
                v = float(vals[p])
                params.append(
                    Param(run=r, key=f"p{p:02d}", value=v, type=ParamType.NUMBER, value_num=v)
                )
        Param.objects.bulk_create(params, batch_size=5000)
        series = []
        for r in runs:
            for m in range(N_METRICS):
                lo, hi = sorted(rng.random(2).tolist())
                series.append(
                    Series(
                        run=r,
                        key=f"m{m}",
                        count=1000,
                        first_step=0,
                        last_step=999,
                        last_value=float(rng.random()),
                        min_value=lo,
                        max_value=hi,
                        first_wall=1.7e9,
                        last_wall=1.7e9 + 999,
                    )
                )
        Series.objects.bulk_create(series, batch_size=5000)
        print(f"seeded runs table data in {time.perf_counter() - t0:.1f}s", flush=True)
    big = Run.objects.filter(project=series_proj, name="big").first()
    if big is None:
        t0 = time.perf_counter()
        rng = np.random.default_rng(1)
        big = Run.objects.create(project=series_proj, name="big", created_by=user)
        v = np.cumsum(rng.normal(size=N_BIG))
        v[777_777] = 1e9  # a spike the chart must show
        append_points(big, {"big": Points.of(np.arange(N_BIG), 1.7e9 + np.arange(N_BIG) * 0.1, v)})
        mid = Run.objects.create(project=series_proj, name="mid", created_by=user)
        v = np.cumsum(rng.normal(size=N_MID))
        append_points(mid, {"mid": Points.of(np.arange(N_MID), 1.7e9 + np.arange(N_MID) * 0.1, v)})
        print(f"seeded series in {time.perf_counter() - t0:.1f}s", flush=True)
    mid = Run.objects.get(project=series_proj, name="mid")
    from django.db import connection

    with connection.cursor() as c:
        # Steady state: autovacuum would analyze and set the visibility map (index-only scans)
        # soon after a bulk load; the benchmark server may run with autovacuum off.
        c.execute("VACUUM ANALYZE")
    return {"project": proj, "big": big, "mid": mid, "user": user}


def timeit(fn, repeat: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _rss_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def csv_child() -> None:
    """Run in a fresh process: export the 1M series as CSV, report rows/s and RSS."""
    setup_django()
    from tracker.models import Run
    from tracker.selectors.exports import _buffered, iter_series_csv

    run = Run.objects.get(project__slug="series", name="big")
    rss0 = _rss_kb("VmRSS")
    try:  # reset the peak so that VmHWM measures the export alone (Linux)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t = time.perf_counter()
    nbytes = rows = 0
    for piece in _buffered(iter_series_csv(run)):
        nbytes += len(piece)
        rows += piece.count(b"\n")
    dt = time.perf_counter() - t
    rss1 = _rss_kb("VmHWM")
    print(
        json.dumps(
            {"rows": rows - 1, "seconds": dt, "bytes": nbytes, "rss0_kb": rss0, "rss1_kb": rss1}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--csv-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.csv_child:
        csv_child()
        return
    ensure_database(DB_NAME, fresh=args.fresh)
    setup_django()
    import numpy as np
    from django.db import connection

    from tracker.access import Principal
    from tracker.models import Series, SeriesChunk
    from tracker.selectors.runs_table import runs_table
    from tracker.selectors.series_query import dumps, query_series_arrays, series_payload
    from tracker.services.series_codec import decode
    from tracker.services.sharing import create_token

    d = seed()
    big, mid, proj = d["big"], d["mid"], d["project"]
    principal = Principal(user=d["user"])
    R = args.repeat
    results: list[tuple[str, float, float, str, float]] = []  # name, p50, p95, target, reference

    # 1. chart query -----------------------------------------------------------------------------
    def chart() -> bytes:
        items = query_series_arrays([big], ["big"], max_points=1000)
        assert items[0].downsampled and 1e9 in items[0].value
        return dumps({"series": series_payload(items)})

    from django.core.cache import cache

    from tracker.selectors import series_query as sq

    metas = list(SeriesChunk.objects.filter(series__run=big).values_list(*sq._META))
    cold = []
    for _ in range(5):
        cache.delete_many([sq._lod_key(m) for m in metas])
        t = time.perf_counter()
        chart()
        cold.append((time.perf_counter() - t) * 1000)
    t_chart = timeit(chart, R)
    blobs = [
        bytes(b)
        for b in SeriesChunk.objects.filter(series__run=big)
        .order_by("step_min")
        .values_list("data", flat=True)
    ]
    t_ref = timeit(lambda: [decode(b) for b in blobs], R)
    results.append(
        (
            "chart 1M -> 1k pts, cold (LOD summaries rebuilt)",
            statistics.median(cold),
            max(cold),
            "(info)",
            statistics.median(t_ref),
        )
    )
    results.append(
        (
            "chart 1M -> 1k pts, server (selector+JSON)",
            statistics.median(t_chart),
            pct(t_chart, 0.95),
            "<= 30 ms",
            statistics.median(t_ref),
        )
    )

    # HTTP via gunicorn -------------------------------------------------------------------------
    _, secret = create_token(user=d["user"], name="bench")
    env = {
        **os.environ,
        "DATABASE_URL": DB_URL,
        "DJANGO_SETTINGS_MODULE": "tracker.settings",
        "TRACKER_THROTTLE_RATE": "1000000/min",
    }
    web = Deployment(env, Path(tempfile.mkdtemp(prefix="tracker-bench-query-")), web_workers=1)
    try:
        web.start_web()
        base = f"{web.url}/api/v1"

        def get(path: str) -> bytes:
            req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {secret}"})
            with urllib.request.urlopen(req) as r:  # noqa: S310 - loopback only
                return r.read()

        t_http_chart = timeit(lambda: get(f"/runs/{big.pk}/series/?keys=big&max_points=1000"), R)
        results.append(
            (
                "chart 1M -> 1k pts, over HTTP (gunicorn)",
                statistics.median(t_http_chart),
                pct(t_http_chart, 0.95),
                "(info)",
                statistics.median(t_ref),
            )
        )

        def full() -> None:
            body = json.loads(get(f"/runs/{mid.pk}/series/?keys=mid&max_points=100000"))
            assert len(body["series"][0]["value"]) == N_MID

        def full_raw() -> None:
            get(f"/runs/{mid.pk}/series/?keys=mid&max_points=100000")

        t_full = timeit(full_raw, R)
        full()
        mid_blobs = [
            bytes(b)
            for b in SeriesChunk.objects.filter(series__run=mid).values_list("data", flat=True)
        ]
        t_mid_ref = timeit(lambda: [decode(b) for b in mid_blobs], R)
        results.append(
            (
                "full-res 100k pts over HTTP",
                statistics.median(t_full),
                pct(t_full, 0.95),
                "<= 50 ms",
                statistics.median(t_mid_ref),
            )
        )
    finally:
        web.stop()

    # 3. runs table ---------------------------------------------------------------------------------
    flt = "params.p03 < 0.5 and metrics.m0.max > 0.2"
    cols = [
        "name",
        "status",
        "params.p00",
        "params.p01",
        "params.p02",
        "metrics.m1.last",
        "metrics.m2.max",
    ]

    def page(cursor=None):
        return runs_table(
            principal,
            proj,
            filter_expr=flt,
            sort="-metrics.m1.last",
            columns=cols,
            limit=50,
            cursor=cursor,
        )

    def plain():
        with connection.cursor() as c:
            c.execute(
                "SELECT id, name FROM tracker_run WHERE project_id = %s ORDER BY created_at DESC, id DESC LIMIT 50",
                [proj.pk],
            )
            c.fetchall()

    t_plain = timeit(plain, R)
    first = page()
    t_first = timeit(page, R)
    results.append(
        (
            f"runs table first page ({first.total} of {N_RUNS} match)",
            statistics.median(t_first),
            pct(t_first, 0.95),
            "<= 100 ms",
            statistics.median(t_plain),
        )
    )
    t_nototal = timeit(
        lambda: runs_table(
            principal,
            proj,
            filter_expr=flt,
            sort="-metrics.m1.last",
            columns=cols,
            limit=50,
            with_total=False,
        ),
        R,
    )
    results.append(
        (
            "runs table first page, no total",
            statistics.median(t_nototal),
            pct(t_nototal, 0.95),
            "<= 100 ms",
            statistics.median(t_plain),
        )
    )
    cur, depth = first, 1
    while cur.next_cursor and depth < 60:
        cur = page(cur.next_cursor)
        depth += 1
    deep_cursor = cur.prev_cursor and page(cur.prev_cursor).next_cursor
    t_deep = timeit(lambda: page(deep_cursor), R)
    results.append(
        (
            f"runs table deep page (page {depth})",
            statistics.median(t_deep),
            pct(t_deep, 0.95),
            "<= 100 ms",
            statistics.median(t_plain),
        )
    )
    t_name = timeit(
        lambda: runs_table(principal, proj, sort="params.p07", columns=cols, limit=50), R
    )
    results.append(
        (
            "runs table, no filter, sort by param",
            statistics.median(t_name),
            pct(t_name, 0.95),
            "<= 100 ms",
            statistics.median(t_plain),
        )
    )

    # 4. CSV export -------------------------------------------------------------------------------------
    out = subprocess.run(
        [sys.executable, __file__, "--csv-child"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": DB_URL},
        capture_output=True,
        text=True,
        check=True,
    )
    csv_stats = json.loads(out.stdout.strip().splitlines()[-1])
    rows_s = csv_stats["rows"] / csv_stats["seconds"]

    print()
    print(
        f"{'benchmark':<52} {'p50 ms':>9} {'p95 ms':>9} {'target':>10} {'ref p50 ms':>11} {'ratio':>7}"
    )
    print("-" * 104)
    for name, p50, p95, target, ref in results:
        print(f"{name:<52} {p50:9.1f} {p95:9.1f} {target:>10} {ref:11.2f} {p50 / ref:7.1f}")
    print()
    print(
        f"CSV export of {csv_stats['rows']:,} points: {csv_stats['seconds']:.2f} s, {rows_s:,.0f} rows/s, "
        f"{csv_stats['bytes'] / 1e6:.1f} MB; peak RSS {csv_stats['rss1_kb'] / 1024:.0f} MB "
        f"(reference: {csv_stats['rss0_kb'] / 1024:.0f} MB RSS of the same process before exporting, ratio {csv_stats['rss1_kb'] / csv_stats['rss0_kb']:.2f})"
    )
    n_chunks = SeriesChunk.objects.filter(series__run=big).count()
    print(
        f"(1M series = {n_chunks} chunks; {Series.objects.get(run=big).count:,} points; numpy {np.__version__})"
    )


if __name__ == "__main__":
    main()
