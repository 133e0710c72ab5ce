"""A client offline for minutes mid-run: it spools to its journal and delivers exactly once.

    .venv/bin/python bench/faults/offline_client.py                     # 10 minutes offline
    .venv/bin/python bench/faults/offline_client.py --offline-seconds 60

The long twin of tests/faults/test_client_faults.py::test_client_offline_60s_delivers_exactly_once.
Starts gunicorn + Celery worker + moto on a fresh PostgreSQL database (`tracker_bench_faults`),
puts a TCP proxy between the client and gunicorn, logs for --before seconds, then cuts and
refuses every connection for --offline-seconds while training goes on at --rate steps/s, then
restores and logs --after seconds more, finishes, and prints a result table: points logged,
stored, missing, duplicated, journal size at its peak and the time the backlog took to drain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import Stack, setup_tenants  # noqa: E402
from tests.faults.helpers import TcpProxy  # noqa: E402


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--offline-seconds", type=float, default=600.0)
    ap.add_argument("--before", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=200.0, help="steps/s (10 metrics each)")
    ap.add_argument("--db", default="tracker_bench_faults")
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/8")
    args = ap.parse_args()
    args.clients = 0

    work = Path(tempfile.mkdtemp(prefix="tracker-offline-"))
    stack = Stack(args, work)
    for k, v in stack.env.items():
        if k.startswith(("DATABASE_URL", "S3_", "CELERY_", "TRACKER_BLOB", "TRACKER_CACHE")):
            os.environ[k] = v
    os.environ["DJANGO_SETTINGS_MODULE"] = "tracker.settings"
    os.environ["TRACKER_OFFLINE_GRACE"] = "2"
    cache = Path(stack.env["TRACKER_CACHE_DIR"])
    print(f"stack: {stack.url}, db {args.db}, journal under {cache}")
    proxy = None
    try:
        stack.start()
        import django

        django.setup()
        import logging

        logging.getLogger("tracker_client").setLevel(logging.ERROR)  # expected retry warnings
        logging.getLogger("httpx").setLevel(logging.WARNING)
        import tracker_client

        from tracker.models import Run, Series
        from tracker.selectors.series import read_points

        (token,), _ = setup_tenants(1)
        proxy = TcpProxy(("127.0.0.1", stack.web_port))
        run = tracker_client.init(
            project="load/bench",
            name="offline",
            url=f"http://127.0.0.1:{proxy.port}",
            token=token,
            telemetry=False,
        )
        keys = [f"m{j}" for j in range(10)]
        step = 0

        def train(seconds: float) -> None:
            nonlocal step
            start, first = time.monotonic(), step
            while time.monotonic() - start < seconds:
                run.log({k: step * 0.5 + j for j, k in enumerate(keys)}, step=step)
                step += 1
                behind = (step - first) / args.rate - (time.monotonic() - start)
                if behind > 0:
                    time.sleep(behind)

        train(args.before)
        run.flush(timeout=120)
        proxy.outage()
        t_off = time.monotonic()
        peak_journal = 0
        while time.monotonic() - t_off < args.offline_seconds:
            train(min(5.0, args.offline_seconds - (time.monotonic() - t_off)))
            peak_journal = max(peak_journal, dir_size(cache))
        stored_during = Series.objects.filter(run_id=run.id, key="m0").values_list(
            "count", flat=True
        )
        stored_during = next(iter(stored_during), 0)
        proxy.restore()
        t_back = time.monotonic()
        train(args.after)
        run.finish(timeout=3600)
        drained = time.monotonic() - t_back
        logged = step
        missing, dupes = 0, 0
        for key in keys:
            series = Series.objects.get(run_id=run.id, key=key)
            pts = read_points(series)
            steps = pts.steps.tolist()
            dupes += len(steps) - len(set(steps))
            missing += logged - len(set(steps))
            if series.count != len(steps):
                dupes += abs(series.count - len(steps))
        status = Run.objects.get(pk=run.id).status
    finally:
        if proxy is not None:
            proxy.close()
        stack.stop()
    print()
    print(f"{'offline for':<34}{args.offline_seconds:>12.0f} s")
    print(f"{'steps logged (x10 metrics)':<34}{logged:>12,}")
    print(f"{'stored while offline (m0)':<34}{stored_during:>12,}")
    print(f"{'journal peak size':<34}{peak_journal / 1e6:>12.1f} MB")
    print(f"{'restore -> finish() returned':<34}{drained:>12.1f} s")
    print(f"{'points missing':<34}{missing:>12,}")
    print(f"{'points duplicated':<34}{dupes:>12,}")
    print(f"{'run status':<34}{status:>12}")
    ok = missing == 0 and dupes == 0 and status == "finished" and stored_during < logged
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
