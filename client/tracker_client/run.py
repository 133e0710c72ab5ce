"""The `Run` object and the process-wide "current run" used by the module-level functions.

Run creation is synchronous when the server answers (so a wrong project or token fails at
`init()`, where it is easy to fix). When the server cannot be reached, or `offline=True`, the
run is created lazily: it gets a client-side id (`local-<hex>`), a `create_run` record carrying
the Idempotency-Key of the failed attempt goes first into the run's journal, and everything
logged afterwards queues behind it. Whoever delivers the journal — this process once the
server is back, or `tracker sync` later — creates the run, records the server id in the
journal's meta.json, and sends the rest to that id.

Step semantics: `log(data)` without a step uses the run's step counter and advances it by one;
`log(data, step=n)` uses n and moves the counter to n+1 if that is ahead. Images, text and
histograms logged without a step attach to the latest step used by `log()` and do not advance
the counter. A resumed run (`run_id=`) continues after the highest step its metrics reached on
the server (at 0 when it resumes offline: pass explicit steps there).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import media
from ._values import coerce_step, flatten_params, validate_key, validate_tags
from .artifacts import ArtifactManager, deliver_artifact_record, download_artifact
from .batching import Pipeline, RunState
from .config import ConfigError, Settings, resolve, validate_project
from .http import ApiError, HttpClient, RetryPolicy, TrackerUnreachable, get_client
from .journal import Journal, JournalLocked, new_local_id, run_journal_dir
from .records import ARTIFACT, CREATE_RUN, PARAMS, PATCH, Record, json_record, new_key
from .summaries import histogram_item, pr_curve_item
from .telemetry import TelemetryThread

logger = logging.getLogger("tracker_client")

STATUSES = ("finished", "failed", "crashed")
_INIT_RETRY = RetryPolicy(max_attempts=3, max_elapsed=8.0, base=0.5, cap=4.0)

_current: Run | None = None
_active: list[Run] = []
_state_lock = threading.RLock()
_uncaught_exception = False
_hooks_installed = False


def _next_step_on_server(http: HttpClient, run_id: int) -> int:
    """One past the highest step of the run's metrics (telemetry has its own steps), so that
    `log()` without a step continues a resumed run instead of overwriting its start."""
    try:
        keys = http.call("GET", f"/api/v1/runs/{run_id}/keys", retry=_INIT_RETRY)["keys"]
    except (TrackerUnreachable, ApiError, KeyError, TypeError) as exc:
        logger.warning("tracker: cannot read run %s's last step (%s); counting from 0", run_id, exc)
        return 0
    steps = [
        k["last_step"]
        for k in keys
        if k.get("kind") == "metric"
        and not str(k.get("key", "")).startswith("sys/")
        and isinstance(k.get("last_step"), int)
    ]
    return max(steps) + 1 if steps else 0


class Run:
    """One tracked run. Thread-safe; every `log*` method returns without network I/O."""

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: list[str] | None = None,
        run_id: int | str | None = None,
        telemetry: bool = True,
        telemetry_interval: float = 5.0,
        offline: bool = False,
        *,
        notes: str | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        settings = resolve(url=url, token=token, project=project)
        self.settings: Settings = settings
        self.offline = bool(offline)
        flat_params = flatten_params(params or {})
        tag_list = validate_tags(tags or [])
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a str")
        if run_id is None and not settings.project:
            raise ConfigError(
                "no project: pass init(project='workspace/project') or set TRACKER_PROJECT"
            )
        http: HttpClient | None = None
        if not self.offline:
            http = get_client(settings.url, settings.require_token())
        self._http = http
        self.params: dict[str, Any] = dict(flat_params)
        self.tags = tag_list
        self._finished = False
        self._finish_lock = threading.Lock()
        self.status = "running"

        journal: Journal | None = None
        start_offline = False
        create_record: Record | None = None
        resume_patch = False
        server_data: dict[str, Any] | None = None
        resume_step = 0
        if run_id is not None:
            server_id = int(run_id)
            journal = self._open_existing_journal(settings.url, str(server_id))
            if http is not None:
                try:
                    server_data = http.call("GET", f"/api/v1/runs/{server_id}/", retry=_INIT_RETRY)
                except TrackerUnreachable as exc:
                    logger.warning("tracker: %s; resuming run %s offline", exc, server_id)
                    start_offline = True
                except ApiError as exc:
                    if not exc.retryable:
                        raise
                    start_offline = True
            state = RunState(
                url=settings.url,
                project=(server_data or {}).get("project") or settings.project,
                server_id=server_id,
                local_id=str(server_id),
                name=(server_data or {}).get("name") or name,
            )
            if server_data:
                state.web_url = server_data.get("url")
                self.params = {**server_data.get("params", {}), **self.params}
                assert http is not None
                resume_step = _next_step_on_server(http, server_id)
            resume_patch = True
        else:
            project_slug = validate_project(str(settings.project))
            create_body: dict[str, Any] = {"source": "client"}
            if name:
                create_body["name"] = name
            if tag_list:
                create_body["tags"] = tag_list
            if notes:
                create_body["notes"] = notes
            if flat_params:
                create_body["params"] = flat_params
            key = new_key()
            state = RunState(
                url=settings.url,
                project=project_slug,
                server_id=None,
                local_id=new_local_id(),
                name=name,
            )
            created = None
            if http is not None:
                try:
                    created = http.call(
                        "POST",
                        f"/api/v1/projects/{project_slug}/runs/",
                        json_body=create_body,
                        headers={"Idempotency-Key": key},
                        retry=_INIT_RETRY,
                    )
                except TrackerUnreachable as exc:
                    logger.warning("tracker: %s; logging offline, will create the run later", exc)
                except ApiError as exc:
                    if not exc.retryable:
                        raise
                    logger.warning("tracker: %s; logging offline, will create the run later", exc)
            if created is not None:
                state.set_created(created)
            else:
                import json

                start_offline = not self.offline
                create_record = Record(
                    CREATE_RUN,
                    0,
                    key,
                    json.dumps(
                        {"project": project_slug, "create": create_body}, separators=(",", ":")
                    ).encode(),
                    count=1,
                )
        self._state = state

        def journal_factory() -> Journal:
            dirname = state.local_id if state.server_id is None else str(state.server_id)
            if create_record is not None:
                dirname = state.local_id  # the journal that holds the create must keep its name
            return Journal(
                run_journal_dir(settings.url, dirname),
                meta={
                    "url": settings.url,
                    "project": state.project,
                    "local_id": state.local_id,
                    "server_run_id": state.server_id,
                    "name": state.name,
                },
            )

        def artifact_handler(record: Record) -> None:
            assert http is not None
            deliver_artifact_record(http, record, state.server_id)

        self._pipeline = Pipeline(
            http=http,
            run=state,
            journal_factory=journal_factory,
            journal=journal,
            offline=self.offline,
            grace=settings.offline_grace,
            artifact_handler=artifact_handler,
            start_seq=1 if create_record is not None else 0,
        )
        if start_offline:
            self._pipeline.go_offline()
        if create_record is not None:
            self._pipeline.submit_record(create_record)
        if resume_patch:
            self._pipeline.submit(PATCH, {"status": "running"})
            if flat_params:
                self._pipeline.submit(PARAMS, {"params": flat_params}, len(flat_params))
            if tag_list:
                self._pipeline.submit(PATCH, {"tags": tag_list})
        self._buffer = self._pipeline.buffer
        if resume_step:
            self._buffer.next_step = resume_step
        # Bound directly: saves one Python frame per call on the hot path.
        self.log = self._buffer.log  # type: ignore[method-assign]

        self._artifacts = ArtifactManager(
            http,
            state,
            self._park_artifact,
            lambda: self._pipeline.offline,
            wait_for_run=settings.offline_grace,
        )
        self._telemetry: TelemetryThread | None = None
        if telemetry:
            self._telemetry = TelemetryThread(self._log_system, telemetry_interval).start()
        _register(self)
        self._announce()

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> int | None:
        """Server id; None while a lazily created run has not reached the server yet."""
        return self._state.server_id

    @property
    def local_id(self) -> str:
        return self._state.local_id

    @property
    def name(self) -> str | None:
        return self._state.name

    @property
    def project(self) -> str | None:
        return self._state.project

    @property
    def url(self) -> str | None:
        """Web URL of the run (from the server)."""
        return self._state.web_url

    @property
    def journal_dir(self) -> Path | None:
        return self._pipeline.journal_dir

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._pipeline.stats)

    def __repr__(self) -> str:
        ident = self.id if self.id is not None else self.local_id
        return f"<Run {ident} {self.project}/{self.name or ''} {self.status}>"

    # -- logging ---------------------------------------------------------------------------

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric values `{key: number}` at `step` (None: the run's counter, advanced by
        one). NaN/±inf are allowed. Returns immediately; delivery happens in the background."""
        self._buffer.log(data, step)

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self._buffer.log({key: value}, step)

    def _log_system(self, values: dict[str, float], index: int, wall: float) -> None:
        self._buffer.append_row(index, wall, values)

    def log_at(self, data: Mapping[str, Any], step: int, wall_time: float | None = None) -> None:
        """Log values at an explicit step (and wall time) without touching the step counter —
        for series with their own x axis (batch-level metrics, TensorBoard-style writers)."""
        self._buffer.append_row(step, time.time() if wall_time is None else wall_time, data)

    def _media_step(self, step: Any) -> int:
        if step is None:
            return max(self._buffer.next_step - 1, 0)
        return coerce_step(step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Upsert params; nested dicts become `a/b` keys. Values: numbers, str, bool, None."""
        flat = flatten_params(params)
        if not flat:
            return
        self.params.update(flat)
        self._pipeline.submit(PARAMS, {"params": flat}, len(flat))

    def set_tags(self, tags: list[str]) -> None:
        """Replace the run's tags."""
        self.tags = validate_tags(tags)
        self._pipeline.submit(PATCH, {"tags": self.tags})

    def log_text(
        self, key: str, text: str, step: int | None = None, wall_time: float | None = None
    ) -> None:
        validate_key(key, "text key")
        if not isinstance(text, str):
            raise TypeError(f"log_text expects str, got {type(text).__name__}")
        self._pipeline.add_items(
            "text",
            [
                {
                    "key": key,
                    "step": self._media_step(step),
                    "value": text,
                    "wall_time": time.time() if wall_time is None else wall_time,
                }
            ],
        )

    def log_image(
        self,
        key: str,
        image: Any,
        step: int | None = None,
        caption: str | None = None,
        wall_time: float | None = None,
    ) -> None:
        """Log an image: numpy array (HW/HWC/CHW, uint8 or float in [0, 1]), PIL image,
        matplotlib figure, torch tensor (CHW), file path or encoded bytes (PNG/JPEG/GIF/WebP).

        The data is copied now and encoded in the background, so the call is cheap and the
        caller may reuse its buffer immediately.
        """
        validate_key(key, "image key")
        if caption is not None and not isinstance(caption, str):
            raise TypeError("caption must be a str")
        captured = media.capture(image)
        meta: dict[str, Any] = {
            "key": key,
            "step": self._media_step(step),
            "wall_time": time.time() if wall_time is None else wall_time,
        }
        if caption:
            meta["caption"] = caption
        self._pipeline.add_image(meta, captured)

    def log_histogram(
        self,
        key: str,
        values: Any,
        step: int | None = None,
        *,
        bins: Any = "tensorflow",
        wall_time: float | None = None,
    ) -> None:
        validate_key(key, "histogram key")
        item = histogram_item(
            key,
            values,
            self._media_step(step),
            time.time() if wall_time is None else wall_time,
            bins,
        )
        self._pipeline.add_items("histograms", [item])

    def log_histogram_item(self, item: dict[str, Any]) -> None:
        """A prepared histogram item (see summaries.histogram_item)."""
        validate_key(item["key"], "histogram key")
        self._pipeline.add_items("histograms", [item])

    def log_pr_curve(
        self,
        key: str,
        labels: Any,
        predictions: Any,
        step: int | None = None,
        *,
        num_thresholds: int = 127,
        weights: Any = None,
        wall_time: float | None = None,
    ) -> None:
        validate_key(key, "pr curve key")
        item = pr_curve_item(
            key,
            labels,
            predictions,
            self._media_step(step),
            time.time() if wall_time is None else wall_time,
            num_thresholds,
            weights,
        )
        self._pipeline.add_items("pr_curves", [item])

    def log_pr_curve_item(self, item: dict[str, Any]) -> None:
        validate_key(item["key"], "pr curve key")
        self._pipeline.add_items("pr_curves", [item])

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> list[str]:
        """Upload a file, or every file of a directory as `name/relative/path`, in the
        background; `finish()` waits for it. Returns the artifact paths."""
        return self._artifacts.submit(path, name)

    def wait_for_artifacts(self, timeout: float | None = None) -> None:
        """Block until the artifacts logged so far are uploaded *and* the server has checked
        their sha256. `finish()` only waits for the upload: the server checks large artifacts
        in the background (they are downloadable meanwhile). Raises ArtifactError naming any
        the server rejected (e.g. a file rewritten while it was uploaded), TimeoutError."""
        self._artifacts.wait_verified(timeout)

    def _park_artifact(self, ref: dict[str, Any]) -> None:
        self._pipeline.journal_record(json_record(ARTIFACT, self._pipeline.next_seq(), ref, 1))

    def download_artifact(self, path: str, dest: str | os.PathLike[str] = ".") -> Path:
        """Download artifact `path` of this run to `dest`, verifying its sha256."""
        if self._http is None or self.id is None:
            raise RuntimeError("this run is not on the server (offline or not created yet)")
        return download_artifact(self._http, self.id, path, dest)

    # -- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged so far is delivered (True) or parked in the journal."""
        return self._pipeline.flush(timeout=timeout, progress=True)

    def finish(self, status: str | None = None, *, timeout: float | None = None) -> None:
        """Flush everything, wait for artifact uploads and set the final status.

        If the server is unreachable, what remains is in the journal (`tracker sync` sends it).
        Idempotent; called automatically at interpreter exit.
        """
        status = status or "finished"
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        try:
            if self._telemetry is not None:
                self._telemetry.stop()
            self._artifacts.wait(progress=True)
            self._artifacts.close()
            if self._artifacts.verifying:
                logger.info(
                    "tracker: %d artifact(s) uploaded; the server is checking their sha256 "
                    "(run.wait_for_artifacts() waits for that)",
                    len(self._artifacts.verifying),
                )
            self._pipeline.form_now()  # the status change must come after all data
            self._pipeline.submit(PATCH, {"status": status})
            journal_dir = self._pipeline.journal_dir
            left = self._pipeline.close(timeout=timeout, progress=True)
            self.status = status
            if left:
                msg = (
                    f"tracker: {left} batch(es) of run {self.id or self.local_id} are saved in "
                    f"{journal_dir}; run `tracker sync` to upload them"
                )
                logger.warning(msg)
                if not logger.hasHandlers():
                    print(msg, file=sys.stderr)
        finally:
            _unregister(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish("failed" if exc_type is not None else "finished")

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _open_existing_journal(url: str, dirname: str) -> Journal | None:
        directory = run_journal_dir(url, dirname)
        if not (directory / "meta.json").exists():
            return None
        try:
            return Journal(directory)
        except JournalLocked as exc:
            raise RuntimeError(
                f"run {dirname} is being logged by another process ({exc})"
            ) from None

    def _announce(self) -> None:
        if os.environ.get("TRACKER_SILENT"):
            return
        if self.offline:
            where = "offline (journal; upload later with `tracker sync`)"
        elif self.url:
            where = self.url
        elif self.id is None:
            where = f"{self.settings.url} (server unreachable; spooling to disk)"
        else:
            where = f"{self.settings.url} run {self.id}"
        print(f"tracker: run {self.name or self.local_id!s} → {where}", file=sys.stderr)


# -- process-wide state ----------------------------------------------------------------------


def _register(run: Run) -> None:
    global _hooks_installed
    with _state_lock:
        _active.append(run)
        if not _hooks_installed:
            _hooks_installed = True
            atexit.register(_finish_all_at_exit)
            previous = sys.excepthook

            def hook(exc_type: Any, exc: Any, tb: Any) -> None:
                global _uncaught_exception
                _uncaught_exception = True
                previous(exc_type, exc, tb)

            sys.excepthook = hook


def _unregister(run: Run) -> None:
    global _current
    with _state_lock:
        if run in _active:
            _active.remove(run)
        if _current is run:
            _current = None


def _finish_all_at_exit() -> None:
    status = "failed" if _uncaught_exception else "finished"
    for run in list(_active):
        try:
            run.finish(status)
        except Exception as exc:  # at exit there is nobody left to raise to
            logger.error("tracker: could not finish run %s at exit: %s", run.local_id, exc)


def set_current(run: Run | None) -> None:
    global _current
    with _state_lock:
        _current = run


def current_run() -> Run | None:
    return _current


def require_run() -> Run:
    run = _current
    if run is None:
        raise RuntimeError("no active run: call tracker_client.init(project=...) first")
    return run
