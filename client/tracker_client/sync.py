"""Deliver journals left behind by offline or interrupted runs (`tracker sync`)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import deliver_artifact_record
from .config import resolve
from .http import (
    DEFAULT_RETRY,
    ApiError,
    HttpClient,
    RetryPolicy,
    TrackerUnreachable,
    get_client,
    retry_call,
)
from .journal import Journal, JournalLocked, list_journal_dirs
from .records import ARTIFACT, CREATE_RUN, METRIC_COLUMNS, RunNotCreated, deliver

logger = logging.getLogger("tracker_client")


@dataclass
class SyncResult:
    directory: Path
    label: str
    delivered: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    skipped: str | None = None
    run_id: int | None = None
    unreachable: bool = False


def _label(meta: dict[str, Any]) -> str:
    ident = meta.get("server_run_id") or meta.get("local_id") or "?"
    name = meta.get("name") or ""
    project = meta.get("project") or "?"
    return f"run {ident} ({project}{'/' + name if name else ''})"


def sync_journal(
    directory: Path,
    *,
    token: str | None = None,
    dry_run: bool = False,
    http: HttpClient | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> SyncResult:
    """Send one journal's pending records in order; remove the journal once all are acked."""
    try:
        journal = Journal(directory)
    except JournalLocked:
        return SyncResult(directory, directory.name, skipped="in use by a running process")
    result = SyncResult(directory, _label(journal.meta))
    removed = False
    try:
        result.pending = journal.summary()
        result.run_id = journal.meta.get("server_run_id")
        if dry_run or journal.pending_count == 0:
            return result
        if http is None:
            settings = resolve(url=journal.meta.get("url"), token=token)
            http = get_client(settings.url, settings.require_token())
        run_id: int | None = journal.meta.get("server_run_id")
        for record in journal:
            try:
                if record.kind == ARTIFACT:
                    retry_call(
                        lambda _a, r=record, i=run_id: deliver_artifact_record(http, r, i), retry
                    )
                else:
                    response = retry_call(lambda _a, r=record, i=run_id: deliver(http, r, i), retry)
                    if record.kind == CREATE_RUN:
                        run_id = int(response["id"])
                        journal.update_meta(server_run_id=run_id)
                        result.run_id = run_id
                        result.label = _label(journal.meta)
                result.delivered[record.kind] += record.count or 1
                journal.ack(record.seq)
            except TrackerUnreachable as exc:
                result.error = str(exc)
                result.unreachable = True
                break
            except ApiError as exc:
                if exc.retryable:
                    result.error = f"server kept failing: {exc}"
                    break
                if record.kind == CREATE_RUN:
                    result.error = f"the server refused to create the run: {exc}"
                    break
                logger.error(
                    "tracker: %s: %s record rejected and dropped: %s",
                    result.label,
                    record.kind,
                    exc,
                )
                result.dropped[record.kind] += record.count or 1
                journal.ack(record.seq)
            except RunNotCreated:
                result.error = "journal has data but no run to attach it to"
                break
            except Exception as exc:  # e.g. an artifact file that changed: drop that one
                logger.error("tracker: %s: dropping %s record: %s", result.label, record.kind, exc)
                result.dropped[record.kind] += record.count or 1
                journal.ack(record.seq)
        result.pending = journal.summary()
    finally:
        removed = journal.close(remove_if_empty=not dry_run)
    if removed:
        result.pending = Counter()
    return result


def sync_all(
    *,
    token: str | None = None,
    dry_run: bool = False,
    root: Path | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[SyncResult]:
    """Sync every journal; once a server proved unreachable its other journals are skipped."""
    results: list[SyncResult] = []
    down: set[str] = set()
    for directory in list_journal_dirs(root):
        host = directory.parent.name
        if host in down:
            results.append(SyncResult(directory, directory.name, skipped="server unreachable"))
            continue
        result = sync_journal(directory, token=token, dry_run=dry_run, retry=retry)
        if result.unreachable:
            down.add(host)
        results.append(result)
    return results


def describe(counts: Counter[str]) -> str:
    names = {
        "metrics": "points",
        "images": "images",
        "text": "texts",
        "histograms": "histograms",
        "pr_curves": "pr curves",
        "artifact": "artifacts",
        "params": "param sets",
        "patch": "run updates",
        "create_run": "run creations",
    }
    counts = Counter(counts)
    counts["metrics"] += counts.pop(METRIC_COLUMNS, 0)  # the two wire forms of points
    parts = [f"{counts[k]:,} {label}" for k, label in names.items() if counts.get(k)]
    return ", ".join(parts) if parts else "nothing"
