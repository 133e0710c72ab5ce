"""Benchmark: live logging through the real client against a real deployment.

    .venv/bin/python bench/live_logging.py [--points 1000000] [--procs 8] [--images 500]
                                           [--artifact-mb 200] [--web-workers 2 --threads 4]

Starts what a deployment runs — a moto S3 server, gunicorn (tracker.wsgi) and a Celery worker
on Redis, all on PostgreSQL database `tracker_bench_live` (created and migrated when missing) —
then drives `tracker_client` as training code would:

1. one process: the cost of a `run.log()` call (5 keys, p50/p99), points/s accepted (the
   logging loop) and points/s stored (until `finish()` returned: everything acknowledged);
2. N processes logging to N runs at once: aggregate points/s stored, from the moment all N
   (started, run created) are told to go until the last `finish()` returned, and the p95 server
   time of metric batches (from gunicorn's access log, %(D)s);
3. 500 × `log_image` of a 256×256 RGB uint8 array (noise: the PNG does not compress) until
   `flush()` returned, i.e. every image is a blob plus a row on the server; and the cost of
   each `log_image` call;
4. a 200 MB artifact via `run.log_artifact` (presigned multipart, server verifies sha256)
   against plain boto3 `upload_file` with the same part size and concurrency to the same S3:
   until `finish()` returned (S3 holds the bytes, size checked) and, apart, until the worker
   had verified the sha256 and adopted the blob (state "ready").

Every phase checks what it stored in the database. The table shows each figure, its target
from design.md and the ratio (measured / target; for the artifact, against boto3).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Deployment,
    S3Server,
    cpu_reference_ms,
    ensure_database,
    fresh_project,
    stack_env,
)

DB_NAME = "tracker_bench_live"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/5")
LOGS = Path("/tmp/tracker-bench-live-logs")
KEYS = ["loss", "acc", "lr", "grad_norm", "val/loss"]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


# One training process: starts, creates its run, says "ready" and waits for "go" on stdin (so
# that N interpreters starting up are not counted as logging time), then logs `n` points (5 keys
# per step) and prints its timings.
PROC = textwrap.dedent(
    """
    import json, sys, time, tracker_client
    n_steps, name = int(sys.argv[1]), sys.argv[2]
    keys = KEYS_PLACEHOLDER
    run = tracker_client.init(name=name, telemetry=False)
    run.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for step in range(n_steps):
        run.log({k: step * 0.001 + i for i, k in enumerate(keys)}, step=step)
    t1 = time.perf_counter()
    run.finish(timeout=600)
    t2 = time.perf_counter()
    print(json.dumps({"run": run.id, "t0": t0, "log": t1 - t0, "total": t2 - t0}))
    """
).replace("KEYS_PLACEHOLDER", repr(KEYS))


def access_log_times(path: Path, start: int) -> list[float]:
    """Server ms of metric POSTs logged after byte `start` of the access log."""
    out = []
    with open(path, "rb") as fh:
        fh.seek(start)
        for line in fh.read().decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "POST" and parts[1].endswith("/metrics/"):
                out.append(int(parts[-1]) / 1000.0)
    return out


def main() -> None:  # noqa: C901 - a linear script
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000, help="points, single process")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--proc-points", type=int, default=250_000, help="points per process")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--artifact-mb", type=int, default=200)
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--profile", action="store_true", help="pyinstrument one gunicorn worker")
    args = ap.parse_args()
    reference = cpu_reference_ms()

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3_server = S3Server(LOGS, "moto.log")
    env = stack_env(
        ensure_database(DB_NAME), REDIS, s3_server, bucket, TRACKER_THROTTLE_RATE="1000000/min"
    )
    os.environ.update(env)
    access_log = LOGS / "access.log"
    deployment = Deployment(
        env,
        LOGS,
        web_workers=args.web_workers,
        threads=args.threads,
        concurrency=1,
        access_log=access_log,
        profile_web=args.profile,
    )
    rows: list[tuple[str, str, str, str]] = []
    try:
        s3_server.start()

        import django

        django.setup()
        import redis

        from tracker.models import Image, Series
        from tracker.storage import get_blob_store

        store = get_blob_store()
        store.ensure_bucket()  # type: ignore[attr-defined]
        redis.Redis.from_url(REDIS).flushdb()
        project, token = fresh_project()
        cache = Path(tempfile.mkdtemp(prefix="tracker-bench-cache-"))
        client_env = {
            "TRACKER_URL": deployment.url,
            "TRACKER_TOKEN": token,
            "TRACKER_PROJECT": f"bench/{project.slug}",
            "TRACKER_CACHE_DIR": str(cache),
        }
        os.environ.update(client_env)
        deployment.start()
        time.sleep(1.0)

        import numpy as np
        import tracker_client

        # --- 1. one process ----------------------------------------------------------------
        n_steps = args.points // len(KEYS)
        run = tracker_client.init(name="single", telemetry=False)
        call_ns: list[int] = []
        perf = time.perf_counter_ns
        t0 = time.perf_counter()
        for step in range(n_steps):
            d = {k: step * 0.001 + i for i, k in enumerate(KEYS)}
            a = perf()
            run.log(d, step=step)
            call_ns.append(perf() - a)
        t_log = time.perf_counter() - t0
        run.finish(timeout=600)
        t_total = time.perf_counter() - t0
        stored = sum(Series.objects.filter(run_id=run.id).values_list("count", flat=True))
        assert stored == n_steps * len(KEYS), stored
        # The loop without timing calls around each log(): what "accepted" costs in practice.
        run2 = tracker_client.init(name="single-untimed", telemetry=False)
        t0 = time.perf_counter()
        for step in range(n_steps):
            run2.log({k: step * 0.001 + i for i, k in enumerate(KEYS)}, step=step)
        t_log2 = time.perf_counter() - t0
        run2.finish(timeout=600)
        single_rate = stored / t_total
        rows += [
            ("run.log() p50 / p99 (5 keys)",
             f"{pct(call_ns, 0.5) / 1e3:.1f} / {pct(call_ns, 0.99) / 1e3:.1f} µs", "never blocks", ""),
            ("points/s accepted, 1 process", f"{stored / t_log2:,.0f}", "≥ 1,000,000",
             f"{stored / t_log2 / 1e6:.2f}"),
            ("points/s stored, 1 process", f"{single_rate:,.0f}", "≥ 300,000",
             f"{single_rate / 3e5:.2f}"),
        ]  # fmt: skip
        print(f"single: {stored:,} points logged in {t_log:.2f}s, stored in {t_total:.2f}s")

        # --- 2. N processes ------------------------------------------------------------------
        steps_each = args.proc_points // len(KEYS)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", PROC, str(steps_each), f"proc-{i}"],
                env={**os.environ, **client_env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(args.procs)
        ]  # fmt: skip
        for w in workers:  # every interpreter started and its run created
            line = w.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != b"ready":
                raise RuntimeError(line + w.stderr.read()[-2000:])  # type: ignore[union-attr]
        start = access_log.stat().st_size
        t0 = time.perf_counter()
        for w in workers:
            w.stdin.write(b"go\n")  # type: ignore[union-attr]
            w.stdin.flush()  # type: ignore[union-attr]
        import json

        results = []
        for w in workers:
            out, err = w.communicate(timeout=900)
            if w.returncode != 0:
                raise RuntimeError(err.decode()[-2000:])
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        t_multi = time.perf_counter() - t0
        total = 0
        for r in results:
            got = sum(Series.objects.filter(run_id=r["run"]).values_list("count", flat=True))
            assert got == steps_each * len(KEYS), (r, got)
            total += got
        agg = total / t_multi
        lat = access_log_times(access_log, start)
        p95 = pct(lat, 0.95)
        rows += [
            (f"points/s stored, {args.procs} processes (aggregate)", f"{agg:,.0f}",
             f"≥ 1 process ({single_rate:,.0f})", f"{agg / single_rate:.2f}"),
            (f"metric batch server time p50 / p95, {args.procs} procs ({len(lat)} batches)",
             f"{pct(lat, 0.5):.0f} / {p95:.0f} ms", "p95 ≤ 200 ms", f"{200 / p95:.2f}"),
        ]  # fmt: skip
        print(f"{args.procs} procs: {total:,} points in {t_multi:.2f}s")

        # --- 3. images -------------------------------------------------------------------------
        run = tracker_client.init(name="images", telemetry=False)
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(args.images)]
        img_ns = []
        t0 = time.perf_counter()
        for i, arr in enumerate(arrays):
            a = perf()
            run.log_image("samples", arr, step=i)
            img_ns.append(perf() - a)
        run.flush()
        t_img = time.perf_counter() - t0
        run.finish()
        n_img = Image.objects.filter(run_id=run.id).count()
        assert n_img == args.images, n_img
        rows += [
            (f"{args.images} × log_image 256×256 durable", f"{t_img:.2f} s", "≤ 2 s",
             f"{2 / t_img:.2f}"),
            ("log_image call p50 / max", f"{pct(img_ns, 0.5) / 1e6:.3f} / {max(img_ns) / 1e6:.2f} ms",
             "≤ 1 ms", f"{1e6 / pct(img_ns, 0.5):.1f}"),
        ]  # fmt: skip

        # --- 4. artifact vs boto3 ----------------------------------------------------------------
        if args.artifact_mb:
            from boto3.s3.transfer import TransferConfig
            from tracker_client.artifacts import DEFAULT_WORKERS

            path = Path(tempfile.gettempdir()) / f"bench-artifact-{args.artifact_mb}mb.bin"
            if not path.exists() or path.stat().st_size != args.artifact_mb << 20:
                with open(path, "wb") as fh:
                    for _ in range(args.artifact_mb):
                        fh.write(os.urandom(1 << 20))
            s3 = store.client  # type: ignore[attr-defined]
            cfg = TransferConfig(
                multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                max_concurrency=DEFAULT_WORKERS,
            )  # fmt: skip
            t0 = time.perf_counter()
            s3.upload_file(str(path), bucket, f"ref/{uuid.uuid4().hex}", Config=cfg)
            t_boto = time.perf_counter() - t0
            run = tracker_client.init(name="artifact", telemetry=False)
            t0 = time.perf_counter()
            run.log_artifact(path)
            run.finish()
            t_client = time.perf_counter() - t0
            from tracker.models import Artifact

            # finish() returns once S3 assembled the parts and the server checked their size; a
            # large artifact's sha256 is then checked by the worker ("verifying" → "ready").
            # Polled in the database (10 ms), so the second figure includes that check.
            art = Artifact.objects.get(run_id=run.id)
            while art.state == "verifying" and time.perf_counter() - t0 < 600:
                time.sleep(0.01)
                art.refresh_from_db()
            t_verified = time.perf_counter() - t0
            assert art.state == "ready" and art.size == path.stat().st_size
            assert art.blob_id == art.sha256  # content-addressed only after the server's check
            mb = args.artifact_mb
            rows += [
                (f"{mb} MB artifact, boto3 upload_file (reference)",
                 f"{t_boto:.2f} s ({mb / t_boto:.0f} MB/s)", "", ""),
                (f"{mb} MB artifact, client log_artifact+finish (hash+parts+complete)",
                 f"{t_client:.2f} s ({mb / t_client:.0f} MB/s)", "≥ 80 % of boto3",
                 f"{t_boto / t_client:.2f}"),
                (f"{mb} MB artifact, until server-verified (+ worker sha256, adopt)",
                 f"{t_verified:.2f} s ({mb / t_verified:.0f} MB/s)", "(no target)",
                 f"{t_boto / t_verified:.2f}"),
            ]  # fmt: skip
    finally:
        deployment.stop()
        s3_server.stop()

    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("what", "measured", "target", "ratio")
    w = [max(w[i], len(head[i])) for i in range(4)]
    print()
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    print(f"\n(gunicorn {args.web_workers} workers × {args.threads} threads, {os.cpu_count()} CPUs;"
          f" CPU reference loop {reference:.0f} ms (harness.cpu_reference_ms); logs in {LOGS})")  # fmt: skip


if __name__ == "__main__":
    main()
