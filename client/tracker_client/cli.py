"""The `tracker` command line.

Every failure ends as one line on stderr and a non-zero exit status — never a traceback
(set TRACKER_DEBUG=1 to get one): 1 = the operation failed (HTTP error, unreachable server,
I/O), 2 = bad arguments or configuration, 130 = interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._version import __version__
from .config import ConfigError, resolve, save_login, validate_project
from .http import (
    INTERACTIVE_RETRY,
    ApiError,
    HttpClient,
    TrackerError,
    TrackerUnreachable,
    get_client,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors through our one-line convention (still exit status 2)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _err(message: str) -> None:
    print(f"tracker: error: {message}", file=sys.stderr)


def _http(args: argparse.Namespace) -> tuple[HttpClient, str]:
    settings = resolve(url=args.url, token=args.token)
    return get_client(settings.url, settings.require_token(), interactive=True), settings.url


# -- commands ----------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    settings = resolve(url=args.url)
    url = settings.url
    token = args.token or os.environ.get("TRACKER_TOKEN")
    if not token:
        if not sys.stdin.isatty():
            raise ConfigError("no token given: pass --token or run interactively")
        token = getpass.getpass(f"API token for {url}: ").strip()
    if not token:
        raise ConfigError("empty token")
    http = HttpClient(url, token, retry=INTERACTIVE_RETRY)
    try:
        me = http.call("GET", "/api/v1/me/")
    finally:
        http.close()
    path = save_login(url, token)
    who = me.get("username") if isinstance(me, dict) else None
    print(f"Logged in to {url} as {who or '?'}; credentials saved to {path}")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    from .sync import describe, sync_all

    results = sync_all(token=args.token, dry_run=args.dry_run, retry=INTERACTIVE_RETRY)
    if not results:
        print("Nothing to sync.")
        return EXIT_OK
    failed = False
    for res in results:
        if res.skipped:
            print(f"{res.label}: skipped ({res.skipped})")
            continue
        if args.dry_run:
            print(f"{res.label}: pending {describe(res.pending)}")
            continue
        line = f"{res.label}: delivered {describe(res.delivered)}"
        if res.dropped:
            line += f"; dropped {describe(res.dropped)} (rejected by the server)"
        if res.error:
            failed = True
            line += f"; stopped: {res.error}; still pending {describe(res.pending)}"
        print(line)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_upload(args: argparse.Namespace) -> int:
    from .upload import LogdirUploader, format_summary

    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise ConfigError(f"logdir {logdir} is not a directory")
    project = validate_project(args.project)
    if args.interval <= 0:
        raise ConfigError("--interval must be > 0")
    http, url = _http(args)
    uploader = LogdirUploader(
        http, project, logdir, runs_mode=args.runs, progress=not args.no_progress
    )
    project_url = f"{url}/{project}"

    def one_round(first: bool) -> int:
        nonlocal project_url
        files = uploader.changed_files()
        if not files:
            if first:
                print(f"No event files found under {logdir}.")
            return EXIT_OK
        result = uploader.upload_round(files)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        job = result.job or {}
        if not args.watch or first:
            print(f"Sent {_bytes(result.bytes_sent)} in {result.files} file(s); processing...")
        job = uploader.wait_job(job["id"]) if job.get("id") is not None else job
        project_url = job.get("project_url") or project_url
        if job.get("state") == "failed":
            _err(f"import job {job.get('id')} failed: {job.get('error') or 'unknown error'}")
            print(format_summary(job, project_url))
            return EXIT_FAIL
        if args.watch and not first:
            summary = job.get("summary") or {}
            stamp = datetime.now().strftime("%H:%M:%S")
            print(
                f"[{stamp}] +{_bytes(result.bytes_sent)}: {int(summary.get('points') or 0):,}"
                f" points, {int(summary.get('skipped_records') or 0)} skipped records"
            )
        else:
            print(format_summary(job, project_url))
        return EXIT_OK

    status = one_round(first=True)
    if not args.watch:
        return status
    print(f"Watching {logdir} every {args.interval:g}s (Ctrl-C to stop)...")
    try:
        while True:
            time.sleep(args.interval)
            try:
                one_round(first=False)
            except (TrackerUnreachable, ApiError) as exc:
                if isinstance(exc, ApiError) and not exc.retryable:
                    raise
                print(f"warning: {exc}; retrying next round", file=sys.stderr)
    except KeyboardInterrupt:
        print("Stopped watching.")
        return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from .api import Client

    project = validate_project(args.project)
    client = Client(url=args.url, token=args.token)
    runs = client.runs(project, filter=args.filter, limit=args.limit)
    rows = [
        (
            str(r.data.get("id", "")),
            str(r.data.get("name") or ""),
            str(r.data.get("status") or ""),
            str(r.data.get("created_at") or ""),
            ",".join(r.data.get("tags") or []),
        )
        for r in runs
    ]
    header = ("ID", "NAME", "STATUS", "CREATED", "TAGS")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    from .api import Client

    project = validate_project(args.project)
    client = Client(url=args.url, token=args.token)
    out = None if args.output in (None, "-") else Path(args.output)
    tmp = out.with_name(f".{out.name}.tmp") if out is not None else None
    try:
        with open(tmp, "wb") if tmp is not None else _stdout_bytes() as sink:
            if not _export_from_server(client, project, sink):
                _export_assembled(client, project, sink, compact=args.compact)
        if out is not None and tmp is not None:
            os.replace(tmp, out)
            print(f"Exported {project} to {out}", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return EXIT_OK


class _stdout_bytes:  # noqa: N801 - used like open()
    def __enter__(self) -> Any:
        return sys.stdout.buffer

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.buffer.flush()


def _export_from_server(client: Any, project: str, sink: Any) -> bool:
    """Stream the server's own project export (the authoritative `tracker-export` document).
    False when this server has no such endpoint, so the caller assembles one from reads."""
    try:
        with client.http.stream(
            "GET", f"/api/v1/projects/{project}/export", params={"format": "json"}
        ) as response:
            for chunk in response.iter_bytes(1 << 20):
                sink.write(chunk)
        return True
    except ApiError as exc:
        if exc.status in (404, 405, 501):
            return False
        raise


def _export_assembled(client: Any, project: str, sink: Any, *, compact: bool) -> None:
    """Best-effort export from the per-run read endpoints (older servers)."""
    exported: dict[str, Any] = {
        "format": "tracker-export",
        "version": 1,
        "project": project,
        "exported_at": datetime.now(UTC).isoformat(),
        "runs": [],
    }
    for listed in client.runs(project):
        run = client.run(listed.id)
        series = {
            key: [[step, wall, _jsonable(value)] for step, wall, value in points]
            for key, points in run.series().items()
        }
        images = [
            {
                "tag": img.get("tag") or img.get("key"),
                **{k: img.get(k) for k in ("step", "width", "height", "sha256")},
            }
            for img in run.images()
        ]
        exported["runs"].append(
            {
                "id": run.id,
                "name": run.data.get("name"),
                "status": run.data.get("status"),
                "tags": run.data.get("tags") or [],
                "source": run.data.get("source"),
                "params": run.params,
                "series": series,
                "images": images,
                "histograms": run.histograms(),
                "text": run.text(),
                "pr_curves": run.pr_curves(),
            }
        )
    text = json.dumps(exported, indent=None if compact else 1, allow_nan=False)
    sink.write(text.encode() + b"\n")


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="server URL (TRACKER_URL)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="API token (TRACKER_TOKEN)")

    parser = _Parser(
        prog="tracker", description="Tracker experiment-tracking client.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"tracker-client {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("login", parents=[common], help="store URL and token (0600 config file)")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("sync", parents=[common], help="deliver offline journals")
    p.add_argument("--dry-run", action="store_true", help="only show what is pending")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("upload", parents=[common], help="upload a TensorBoard logdir")
    p.add_argument("logdir")
    p.add_argument("--project", required=True, help="workspace/project")
    p.add_argument(
        "--runs",
        choices=("merge", "dirs"),
        default="merge",
        help="merge: train/ validation/ subdirs join their parent run (default); "
        "dirs: every directory with event files is its own run",
    )
    p.add_argument("--watch", action="store_true", help="keep uploading appended data")
    p.add_argument("--interval", type=float, default=5.0, help="--watch rescan period (s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("export", parents=[common], help="export a project's runs")
    p.add_argument("--project", required=True)
    p.add_argument("--format", choices=("json",), default="json")
    p.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    p.add_argument("--compact", action="store_true", help="no indentation")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", parents=[common], help="list a project's runs")
    p.add_argument("--project", required=True)
    p.add_argument("--filter", default=None)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    for name in ("url", "token"):
        if not hasattr(args, name):
            setattr(args, name, None)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("TRACKER_DEBUG") else logging.WARNING,
        format="tracker: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("tracker: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ApiError as exc:
        hint = " (check your token: `tracker login`)" if exc.status == 401 else ""
        _err(f"{exc.message} (HTTP {exc.status} {exc.code}){hint}")
        return EXIT_FAIL
    except TrackerUnreachable as exc:
        cause = f": {exc.cause}" if exc.cause and str(exc.cause) else ""
        _err(f"cannot reach Tracker at {exc.url}{cause}")
        return EXIT_FAIL
    except (TrackerError, OSError, ValueError) as exc:
        if os.environ.get("TRACKER_DEBUG"):
            traceback.print_exc()
        _err(str(exc) or type(exc).__name__)
        return EXIT_FAIL
    except Exception as exc:  # last line of defence: still one line, not a traceback
        if os.environ.get("TRACKER_DEBUG"):
            traceback.print_exc()
        _err(f"unexpected {type(exc).__name__}: {exc}")
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
