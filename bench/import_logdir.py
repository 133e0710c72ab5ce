"""Benchmark: import a 2,000,000-point TensorBoard logdir end to end.

    .venv/bin/python bench/import_logdir.py [--runs 5 --tags 100 --steps 4000] [--workers 2]

Generates 5 runs x 100 tags x 4,000 steps of scalar events (the exact byte layout
tensorboardX/torch write for `add_scalar`, built directly from the TFRecord framing: the
logdir is cached under /tmp), then starts what a deployment runs: a moto S3 server, a
gunicorn API server and a Celery worker (prefork, `--workers` processes) on Redis, all on
PostgreSQL database `tracker_bench` (created and migrated when missing). It uploads the
logdir through the real HTTP upload API (declare, PUT chunks, finish), polls the job until
it succeeds, and checks that every point is stored and queryable.

Printed: end-to-end seconds and points/s against the targets (10 s first milestone, 5 s
final), the pure parse rate (framing + CRC + decode to columnar scalars) against a
framing-only reference loop on the same bytes, and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import struct
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import Deployment, S3Server, ensure_database, fresh_project, stack_env  # noqa: E402
from bench.tfevents_writer import write_scalar_file  # noqa: E402

DB_NAME = "tracker_bench"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/4")
CHUNK = 8 << 20


def generate(root: Path, runs: int, tags: int, steps: int) -> int:
    """Write the logdir; returns the number of scalar events."""
    rng = random.Random(42)
    names = [f"metrics/tag_{t:03d}".encode() for t in range(tags)]
    base = 1_700_000_000.0
    for r in range(runs):
        write_scalar_file(
            root / f"run_{r}" / f"events.out.tfevents.{int(base) + r}.bench.{r}.0",
            steps,
            names,
            lambda _step, _tag: rng.random(),
            wall=lambda step: base + step * 0.05,
        )
    return runs * tags * steps


def logdir_for(runs: int, tags: int, steps: int) -> Path:
    root = Path(f"/tmp/tracker-bench-logdir-{runs}x{tags}x{steps}-v1")
    done = root / ".complete"
    if not done.exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        generate(root, runs, tags, steps)
        done.write_text("ok")
        print(f"generated {root} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return root


def event_files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(root.rglob("*tfevents*")):
        out.append((p.relative_to(root).as_posix(), p))
    return out


# --- parse-only figures --------------------------------------------------------------------------


def parse_rates(files: list[tuple[str, Path]]) -> tuple[float, float, int]:
    """(events/s with CRC + decode, events/s of a framing-only loop, events) on one core."""
    from tracker.ingest.summaries import SummaryDecoder
    from tracker.ingest.tfevents import RecordReader

    data = [p.read_bytes() for _, p in files]
    t = time.perf_counter()
    events = 0
    for blob in data:
        dec = SummaryDecoder()
        for batch in RecordReader(blob).batches():
            out = dec.decode_records(batch)
            events += len(out.scalar_steps)
    parse = time.perf_counter() - t
    # Reference: walk the framing only (length + skip), no CRC, no decoding.
    unpack = struct.Struct("<Q").unpack_from
    t = time.perf_counter()
    n = 0
    for blob in data:
        pos, end = 0, len(blob)
        while pos + 12 <= end:
            (length,) = unpack(blob, pos)
            pos += length + 16
            n += 1
    frame = time.perf_counter() - t
    return events / parse, n / frame, events


# --- processes -----------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Peak RSS of a process tree (the Celery master and its pool children)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_child = 0
        self.peak_total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = [p.memory_info().rss for p in procs]
                self.peak_total = max(self.peak_total, sum(rss))
                self.peak_child = max(self.peak_child, max(rss))
            except Exception:  # noqa: BLE001 - processes come and go
                pass
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tags", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4, help="concurrent file uploads")
    ap.add_argument("--profile", action="store_true", help="pyinstrument the worker")
    args = ap.parse_args()

    total = args.runs * args.tags * args.steps
    root = logdir_for(args.runs, args.tags, args.steps)
    files = event_files(root)
    size = sum(p.stat().st_size for _, p in files)

    logs = Path("/tmp/tracker-bench-logs")
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3_server = S3Server(logs, "moto.log")
    env = stack_env(ensure_database(DB_NAME), REDIS, s3_server, bucket)
    os.environ.update(env)
    deployment = Deployment(
        env,
        logs,
        web_workers=args.web_workers,
        concurrency=args.workers,
        loglevel="INFO",
        profile_worker=args.profile,
    )
    try:
        s3_server.start().create_bucket(bucket)

        import django

        django.setup()
        import redis

        from tracker.models import Series

        redis.Redis.from_url(REDIS).flushdb()
        project, token = fresh_project()
        slug = project.slug
        deployment.start()
        time.sleep(2.0)  # let the worker connect to the broker
        sampler = RssSampler(deployment.worker.pid)  # type: ignore[union-attr]
        sampler.start()

        import httpx

        base = f"{deployment.url}/api/v1"
        headers = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(headers=headers, timeout=120)

        t0 = time.perf_counter()
        r = client.post(
            f"{base}/projects/bench/{slug}/uploads/",
            json={"files": [{"path": rel, "size": p.stat().st_size} for rel, p in files]},
        )
        r.raise_for_status()
        job = r.json()

        def send(entry: dict) -> None:
            rel = entry["path"]
            path = root / rel
            offset = entry["bytes_received"]
            with httpx.Client(headers=headers, timeout=120) as c, open(path, "rb") as fh:
                fh.seek(offset)
                while data := fh.read(CHUNK):
                    resp = c.put(
                        f"{base}/uploads/{job['id']}/files/content?path={quote(rel)}&offset={offset}",
                        content=data,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    resp.raise_for_status()
                    offset = resp.json()["bytes_received"]

        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(send, job["files"]))
        t_upload = time.perf_counter() - t0
        client.post(f"{base}/uploads/{job['id']}/finish/").raise_for_status()
        while True:
            state = client.get(f"{base}/jobs/{job['id']}/").json()
            if state["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        t_total = time.perf_counter() - t0
        sampler.stop.set()
        if state["state"] != "succeeded":
            raise SystemExit(f"job failed: {state['error']}")
        # Queryable: the series summary columns and a full read through the query API.
        stored = sum(Series.objects.filter(run__project=project).values_list("count", flat=True))
        run_id = project.runs.order_by("id").first().pk
        r = client.get(f"{base}/runs/{run_id}/series/", params={"keys": "metrics/tag_000"})
        queryable = r.status_code == 200
        assert stored == total, (stored, total)
        assert state["summary"]["points"] == total, state["summary"]

        ev_s, frame_s, events = parse_rates(files)
        rows = [
            ("logdir", f"{size / 1e6:.0f} MB, {len(files)} files", "", ""),
            ("upload (HTTP → S3 chunks)", f"{t_upload:.2f} s", "", ""),
            (
                "end to end (upload → job succeeded)",
                f"{t_total:.2f} s",
                "≤ 10 s / ≤ 5 s",
                f"{10 / t_total:.2f}x / {5 / t_total:.2f}x of target",
            ),
            ("points stored", f"{stored:,}", f"{total:,}", "ok" if stored == total else "MISMATCH"),
            (
                "points/s end to end",
                f"{total / t_total:,.0f}",
                f"{total / 5:,.0f}",
                f"{total / t_total / (total / 5):.2f}x",
            ),
            (
                "parse only, events/s (1 core)",
                f"{ev_s:,.0f}",
                "≥ 500,000",
                f"{ev_s / 500_000:.2f}x target",
            ),
            (
                "framing-only reference loop, records/s",
                f"{frame_s:,.0f}",
                "",
                f"parse = {ev_s / frame_s:.2f}x of reference",
            ),
            (
                "peak worker RSS (largest process)",
                f"{sampler.peak_child / 2**20:.0f} MB",
                "≤ 400 MB",
                f"{400 * 2**20 / max(sampler.peak_child, 1):.2f}x headroom",
            ),
            ("peak worker RSS (all processes)", f"{sampler.peak_total / 2**20:.0f} MB", "", ""),
            ("series query after import", "200" if queryable else str(r.status_code), "200", ""),
        ]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        w2 = max(len(r[2]) for r in rows)
        print(
            f"\nimport_logdir: {args.runs} runs x {args.tags} tags x {args.steps} steps "
            f"= {total:,} points, {args.workers} worker processes\n"
        )
        print(f"{'measure':<{w0}}  {'result':>{w1}}  {'target':>{w2}}  ratio")
        print("-" * (w0 + w1 + w2 + 30))
        for a, b, c, d in rows:
            print(f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}  {d}")
        print(
            f"\nlogs: {logs}  (sha of first file: "
            f"{hashlib.sha256(files[0][1].read_bytes()[:1024]).hexdigest()[:12]})"
        )
    finally:
        deployment.stop()
        s3_server.stop()


if __name__ == "__main__":
    main()
