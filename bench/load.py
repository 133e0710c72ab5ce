"""Load test: live-logging clients + logdir uploads + browsing, all at once, for minutes.

    .venv/bin/python bench/load.py                 # 300 s, 8 clients, 2 uploaders, 2 browsers
    .venv/bin/python bench/load.py --seconds 60    # a short proof run

Starts its own stack on loopback: PostgreSQL database `tracker_bench_load` (dropped and
re-created), moto S3 server, a Celery worker (prefork, 2 processes) on Redis, gunicorn (2 workers
x 4 threads). Then for --seconds:
  * N client processes (tracker_client) log 10 metrics per step at --rate steps/s and a small
    image every 1,000 steps, then finish() (which returns once the server acknowledged all);
  * M uploader processes generate fresh TensorBoard logdirs and run `tracker upload` on them;
  * browser threads GET project/run pages (through a share link) and series / runs-table API.

Prints: requests, error rate and p50/p95 server latency per request kind (from gunicorn's access
log, %(D)s), the nothing-lost check (every client step and image and every uploaded point is
stored exactly once: series counts against what the clients and uploaders were acknowledged),
and RSS of gunicorn and the worker at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    PG,
    PY,
    Deployment,
    S3Server,
    ensure_database,
    spawn,
    stack_env,
    stop_group,
)
from bench.tfevents_writer import write_scalar_file  # noqa: E402

PROJECT = "load/bench"
TAGS_PER_UPLOAD, STEPS_PER_UPLOAD = 10, 2000

CLIENT = r"""
import json, sys, time
import numpy as np
import tracker_client

i, seconds, rate, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
run = tracker_client.init(project="load/bench", name=f"client-{i}", telemetry=False)
keys = [f"m{j}" for j in range(10)]
images = 0
start = time.monotonic()
step = 0
while time.monotonic() - start < seconds:
    run.log({k: step * 0.5 + j for j, k in enumerate(keys)}, step=step)
    if step % 1000 == 0:
        run.log_image("sample", (np.random.default_rng(step).random((32, 32, 3)) * 255).astype(np.uint8), step=step)
        images += 1
    step += 1
    behind = step / rate - (time.monotonic() - start)
    if behind > 0:
        time.sleep(behind)
t0 = time.monotonic()
run.finish(timeout=900)
json.dump({"run": run.id, "steps": step, "keys": keys, "images": images,
           "finish_s": time.monotonic() - t0}, open(out, "w"))
"""


# --- the stack -------------------------------------------------------------------------------


class Stack:
    """S3 (moto), gunicorn (2 workers x 4 threads, access log) and a Celery worker (prefork, 2
    processes) on a fresh database `args.db` and broker `args.broker`; logs and client
    processes (`spawn`) in `work`."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.s3 = S3Server(work, "moto.log")
        self.env = stack_env(
            f"{PG}/{args.db}",
            args.broker,
            self.s3,
            "bench-load",
            TRACKER_THROTTLE_RATE="100000/min",
            DB_CONN_MAX_AGE="60",
            TRACKER_CACHE_DIR=str(work / "client-cache"),
            TRACKER_CONFIG_DIR=str(work / "client-config"),
        )
        self.access_log = work / "access.log"
        self.deployment = Deployment(
            self.env,
            work,
            web_workers=2,
            threads=4,
            worker_name="bench-load",
            access_log=self.access_log,
        )
        self.web_port = self.deployment.port
        self.url = self.deployment.url
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def gunicorn(self) -> subprocess.Popen[bytes] | None:
        return self.deployment.web

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        return self.deployment.worker

    def spawn(self, cmd: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = spawn(cmd, self.work / log, env)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        ensure_database(self.args.db, fresh=True)
        self.s3.start().create_bucket("bench-load")
        import redis

        # Only the broker DB this bench was given: stale messages of an earlier run go.
        redis.Redis.from_url(self.args.broker).delete("celery")
        self.deployment.start()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_group(proc)
        self.deployment.stop()
        self.s3.stop()


def rss_mb(proc: subprocess.Popen[bytes] | None) -> float:
    import psutil

    if proc is None:
        return 0.0
    try:
        p = psutil.Process(proc.pid)
        total = p.memory_info().rss + sum(
            c.memory_info().rss for c in p.children(recursive=True) if c.is_running()
        )
    except psutil.Error:
        return 0.0
    return total / 1e6


# --- data setup (this process talks to the bench database through Django) --------------------


def setup_tenants(n_tokens: int) -> tuple[list[str], str]:
    from django.contrib.auth import get_user_model

    from tracker.models import Membership, Project, Role, Workspace
    from tracker.services.sharing import create_share_link, create_token

    user = get_user_model().objects.create_user("loader", password="load-test-password")
    ws = Workspace.objects.create(slug="load", name="load")
    Membership.objects.create(workspace=ws, user=user, role=Role.OWNER)
    project = Project.objects.create(workspace=ws, slug="bench", name="bench")
    tokens = [create_token(user=user, name=f"load-{i}")[1] for i in range(n_tokens)]
    _, share = create_share_link(project=project, user=user)
    return tokens, share


# --- uploaders --------------------------------------------------------------------------------


def write_logdir(root: Path, name: str) -> int:
    return write_scalar_file(
        root / name / "events.out.tfevents.1700000000.loadhost",
        STEPS_PER_UPLOAD,
        [f"u/t{t}".encode() for t in range(TAGS_PER_UPLOAD)],
        lambda step, t: float(step + t),
        wall=lambda step: 1.7e9 + step,
    )


def uploader(stack: Stack, w: int, token: str, deadline: float, out: list[dict[str, Any]]) -> None:
    rounds = 0
    while time.monotonic() < deadline:
        root = stack.work / f"logs-{w}-{rounds}"
        name = f"upload-{w}-{rounds}"
        points = write_logdir(root, name)
        env = {**stack.env, "TRACKER_URL": stack.url, "TRACKER_TOKEN": token}
        t0 = time.monotonic()
        r = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "tracker"),
                "upload",
                str(root),
                "--project",
                PROJECT,
                "--no-progress",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out.append(
            {
                "name": name,
                "points": points,
                "rc": r.returncode,
                "s": time.monotonic() - t0,
                "err": r.stderr[-500:],
            }
        )
        shutil.rmtree(root, ignore_errors=True)
        rounds += 1


# --- browsing ---------------------------------------------------------------------------------


def browser(stack: Stack, token: str, share: str, deadline: float, errors: list[str]) -> None:
    import httpx

    rng = random.Random()
    api = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    web = httpx.Client(base_url=stack.url, timeout=60)
    run_ids: list[int] = []
    last_refresh = 0.0
    while time.monotonic() < deadline:
        try:
            if time.monotonic() - last_refresh > 5:
                r = api.get(f"/api/v1/projects/{PROJECT}/runs/table", params={"limit": 100})
                run_ids = [row["id"] for row in r.json().get("results", [])]
                last_refresh = time.monotonic()
            web.get(f"/s/{share}/")
            if run_ids:
                rid = rng.choice(run_ids)
                web.get(f"/s/{share}/runs/{rid}/")
                api.get(f"/api/v1/runs/{rid}/series/", params={"keys": "m0,m1,u/t0"})
                api.get(
                    f"/api/v1/projects/{PROJECT}/series",
                    params={"runs": ",".join(map(str, run_ids[:4])), "keys": "m0"},
                )
        except httpx.HTTPError as exc:
            errors.append(f"browser: {type(exc).__name__}: {exc}")
        time.sleep(0.2)


# --- report -----------------------------------------------------------------------------------

KINDS = [
    ("POST metrics", re.compile(r"^POST /api/v1/runs/\d+/metrics/$")),
    ("POST images", re.compile(r"^POST /api/v1/runs/\d+/images/$")),
    ("POST run create", re.compile(r"^POST /api/v1/projects/[^/]+/[^/]+/runs/$")),
    ("PATCH/POST run misc", re.compile(r"^(PATCH|POST) /api/v1/runs/\d+/(params/)?$")),
    ("POST upload create", re.compile(r"^POST /api/v1/projects/[^/]+/[^/]+/uploads/$")),
    ("PUT upload chunk", re.compile(r"^PUT /api/v1/uploads/\d+/files/content$")),
    ("POST upload finish", re.compile(r"^POST /api/v1/uploads/\d+/finish/$")),
    ("GET job", re.compile(r"^GET /api/v1/jobs/\d+/$")),
    ("GET web project page", re.compile(r"^GET /s/[^/]+/$")),
    ("GET web run page", re.compile(r"^GET /s/[^/]+/runs/\d+/$")),
    ("GET run series", re.compile(r"^GET /api/v1/runs/\d+/series/$")),
    ("GET project series", re.compile(r"^GET /api/v1/projects/[^/]+/[^/]+/series$")),
    ("GET runs table", re.compile(r"^GET /api/v1/projects/[^/]+/[^/]+/runs/table$")),
]


def parse_access_log(path: Path) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "err": 0, "ms": [], "codes": defaultdict(int)}
    )
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        method, upath, status, micros = parts
        kind = next((k for k, rx in KINDS if rx.match(f"{method} {upath}")), "other")
        s = stats[kind]
        s["n"] += 1
        s["ms"].append(int(micros) / 1000)
        s["codes"][status] += 1
        if int(status) >= 500 or int(status) in (400, 401, 403, 404, 409, 413, 429):
            s["err"] += 1
    return stats


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def check_nothing_lost(clients: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> list[str]:
    from tracker.models import Image, IngestJob, Run, Series

    problems = []
    for c in clients:
        series = {s.key: s for s in Series.objects.filter(run_id=c["run"])}
        for key in c["keys"]:
            s = series.get(key)
            if (
                s is None
                or s.count != c["steps"]
                or s.first_step != 0
                or s.last_step != c["steps"] - 1
            ):
                problems.append(f"client run {c['run']} {key}: {s and s.count} != {c['steps']}")
        n_img = Image.objects.filter(run_id=c["run"], key="sample").count()
        if n_img != c["images"]:
            problems.append(f"client run {c['run']}: {n_img} images != {c['images']}")
    for u in uploads:
        if u["rc"] != 0:
            problems.append(f"upload {u['name']} failed rc={u['rc']}: {u['err']}")
            continue
        run = Run.objects.filter(project__slug="bench", source_path=u["name"]).first()
        got = sum(Series.objects.filter(run=run).values_list("count", flat=True)) if run else 0
        if got != u["points"]:
            problems.append(f"upload {u['name']}: {got} points != {u['points']}")
    bad_jobs = IngestJob.objects.exclude(state="succeeded").count()
    if bad_jobs:
        problems.append(f"{bad_jobs} ingest jobs not succeeded")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--uploads", type=int, default=2)
    ap.add_argument("--browsers", type=int, default=2)
    ap.add_argument(
        "--rate", type=float, default=500.0, help="steps/s per client (10 metrics each)"
    )
    ap.add_argument("--db", default="tracker_bench_load")
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/8")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tracker-load-"))
    stack = Stack(args, work)
    for k, v in stack.env.items():
        if k.startswith(("DATABASE_URL", "S3_", "CELERY_", "TRACKER_BLOB")):
            os.environ[k] = v
    os.environ["DJANGO_SETTINGS_MODULE"] = "tracker.settings"
    print(f"stack: gunicorn {stack.url}, db {args.db}, broker {args.broker}, logs in {work}")
    try:
        stack.start()
        import django

        django.setup()
        import logging

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
        tokens, share = setup_tenants(args.clients + args.uploads + args.browsers)
        time.sleep(2)
        rss_start = {"gunicorn": rss_mb(stack.gunicorn), "worker": rss_mb(stack.worker)}
        t_start = time.monotonic()
        deadline = t_start + args.seconds

        client_procs = []
        for i in range(args.clients):
            out = work / f"client-{i}.json"
            env = {**stack.env, "TRACKER_URL": stack.url, "TRACKER_TOKEN": tokens[i]}
            client_procs.append(
                (
                    out,
                    stack.spawn(
                        [PY, "-c", CLIENT, str(i), str(args.seconds), str(args.rate), str(out)],
                        f"client-{i}.log",
                        env=env,
                    ),
                )
            )
        uploads: list[dict[str, Any]] = []
        browse_errors: list[str] = []
        threads = [
            threading.Thread(
                target=uploader, args=(stack, w, tokens[args.clients + w], deadline, uploads)
            )
            for w in range(args.uploads)
        ] + [
            threading.Thread(
                target=browser,
                args=(
                    stack,
                    tokens[args.clients + args.uploads + b],
                    share,
                    deadline,
                    browse_errors,
                ),
            )
            for b in range(args.browsers)
        ]
        for t in threads:
            t.start()
        rss_mid: dict[str, float] = {}
        while time.monotonic() < t_start + args.seconds / 2:
            time.sleep(0.5)
        rss_mid = {"gunicorn": rss_mb(stack.gunicorn), "worker": rss_mb(stack.worker)}
        clients, client_failures = [], []
        for out, proc in client_procs:
            rc = proc.wait(args.seconds + 900)
            if rc != 0 or not out.exists():
                client_failures.append(f"{out.name}: rc={rc}")
            else:
                clients.append(json.loads(out.read_text()))
        for t in threads:
            t.join(args.seconds + 900)
        elapsed = time.monotonic() - t_start
        # Uploads that finished their bytes are parsed by the worker; wait for it to drain.
        from tracker.models import IngestJob

        drain = time.monotonic() + 600
        while IngestJob.objects.filter(state__in=["pending", "running"]).exists():
            if time.monotonic() > drain:
                break
            time.sleep(1)
        rss_end = {"gunicorn": rss_mb(stack.gunicorn), "worker": rss_mb(stack.worker)}
        problems = client_failures + check_nothing_lost(clients, uploads)
        stats = parse_access_log(stack.access_log)
    finally:
        stack.stop()

    total = sum(s["n"] for s in stats.values())
    errors = sum(s["err"] for s in stats.values())
    points = sum(c["steps"] * len(c["keys"]) for c in clients)
    up_points = sum(u["points"] for u in uploads if u["rc"] == 0)
    print()
    print(
        f"duration {elapsed:.0f} s (load {args.seconds:.0f} s); {args.clients} clients at "
        f"{args.rate:g} steps/s x 10 metrics, {args.uploads} uploaders, {args.browsers} browsers"
    )
    print(
        f"{'request kind':<24}{'count':>8}{'errors':>8}{'err %':>8}{'p50 ms':>9}{'p95 ms':>9}  codes"
    )
    for kind, s in sorted(stats.items(), key=lambda kv: -kv[1]["n"]):
        codes = ",".join(f"{c}:{n}" for c, n in sorted(s["codes"].items()))
        print(
            f"{kind:<24}{s['n']:>8}{s['err']:>8}{100 * s['err'] / max(s['n'], 1):>8.2f}"
            f"{pct(s['ms'], 0.5):>9.1f}{pct(s['ms'], 0.95):>9.1f}  {codes}"
        )
    print(f"{'all':<24}{total:>8}{errors:>8}{100 * errors / max(total, 1):>8.2f}")
    print()
    print(
        f"client points acknowledged {points:,} ({points / max(args.seconds, 1):,.0f}/s), images "
        f"{sum(c['images'] for c in clients)}, finish() p95 "
        f"{pct([c['finish_s'] for c in clients], 0.95):.2f} s"
    )
    print(f"uploads {len(uploads)} ({sum(u['rc'] == 0 for u in uploads)} ok), points {up_points:,}")
    print(
        f"browser transport errors {len(browse_errors)}"
        + (f": {browse_errors[:3]}" if browse_errors else "")
    )
    print(f"{'RSS MB':<10}{'start':>9}{'middle':>9}{'end':>9}")
    for name in ("gunicorn", "worker"):
        print(f"{name:<10}{rss_start[name]:>9.0f}{rss_mid.get(name, 0):>9.0f}{rss_end[name]:>9.0f}")
    print()
    if problems:
        print("NOTHING-LOST CHECK FAILED:")
        for p in problems[:30]:
            print("  " + p)
    else:
        print(
            f"nothing lost: every acknowledged point ({points + up_points:,}) and image stored exactly once"
        )
    ok = not problems and errors == 0 and not browse_errors
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
