"""Run discovery over TensorBoard logdirs and TensorBoard's restart/purge semantics (pure).

Public API
----------
``safe_relative_path(path) -> str``
    Validate and normalise an untrusted POSIX relative path (uploads, archive members).
    Raises :class:`UnsafePathError` (a ``ValueError``) for absolute paths, Windows drive
    paths, ``..`` components, backslashes, NUL bytes and empty paths. ``.`` components and
    repeated slashes are removed; unicode and spaces are kept as they are.
``is_tfevents_file(path)`` / ``tfevents_sort_key(path)``
    TensorBoard's test (``"tfevents" in basename``) and the order in which a directory's
    files are read: by the timestamp in ``events.out.tfevents.<timestamp>.<host>...``, then
    by name (equal to TensorBoard's lexicographic order for real file names).
``plan_runs(relative_paths, mode="merge", root_name=None) -> list[RunPlan]``
    Group files into runs. ``walk_logdir(path, mode="merge") -> list[RunPlan]`` does the same
    for a local directory (symlinks are not followed; ``root_name`` = the logdir's basename).
``RunPlan(path, name, sources, artifacts)`` / ``RunSource(directory, prefix, files)``
    ``series_key(source.prefix, tag)`` is the key Tracker stores a series under.
``RestartPurger`` / ``Purge`` / ``tensorboard_view``
    TensorBoard's orphaned-data purge, see below.

Run discovery
-------------
A *TensorBoard run* is a directory holding tfevents files. ``mode="dirs"`` keeps exactly
that: every such directory is one Tracker run named by its relative path, all series
unprefixed (TensorBoard's own semantics).

``mode="merge"`` (default) folds the sub-directories that writers create for ONE training
job into one Tracker run; each such directory becomes a ``RunSource`` whose relative path
prefixes its series keys (``validation/epoch_loss``):

* Keras ``TensorBoard`` callback: ``<log_dir>/train`` and ``<log_dir>/validation``. A
  directory named ``train`` or ``validation`` makes its parent the run, even though the
  parent holds no tfevents file itself (Keras writes none there).
* torch / tensorboardX ``add_scalars(main_tag, {...})``: ``<logdir>/<main_tag>_<key>``
  (slashes in ``main_tag`` replaced by ``_``), each holding the scalar ``main_tag``. They
  merge into the writer's run as e.g. ``loss_train/loss`` -- the same ``run/tag`` pair
  TensorBoard displays.
* torch ``add_hparams``: ``<logdir>/<time.time()>`` (e.g. ``1712345678.1234``) holding the
  hparams experiment/session start/session end and one scalar per metric. It merges into
  the writer's run: the ``HParams*`` items become the run's hyperparameters and the metrics
  are series under the timestamp prefix (``1712345678.1234/hparam/accuracy``). Several
  ``add_hparams`` calls on one writer give several sessions in one run, distinguishable by
  their source prefix.

Generally, in merge mode every tfevents directory that lies below another run's directory
merges into the shallowest such run (so nesting is transitive). This includes the layout of
TensorBoard's hparams plugin API (experiment summary in ``<logdir>``, one sub-directory per
session/trial): all sessions land in one Tracker run, each ``HParamsSessionStart`` under its
own source prefix -- import such a logdir with ``mode="dirs"`` to get one run per trial.
Directories that are not nested stay separate runs, nested paths are kept (``exp1/seed 2``),
and tfevents files in the logdir root form the run ``.`` whose display ``name`` is
``root_name`` (the logdir's basename when walking a local directory, else ``.``). Several
tfevents files in one directory are read in ``tfevents_sort_key`` order within one
``RunSource``.

Artifacts: ``projector_config.pbtxt`` files and embedding files (``*.tsv``, ``*.bytes``,
``*.bin``, sprite images ``*sprite*.png|jpg``, ``bookmarks.txt``) found in a run's directory
tree -- torch/tensorboardX ``add_embedding`` writes them to ``<logdir>/<step>/<tag>/`` next to
a ``projector_config.pbtxt`` in the logdir -- are attached to the nearest run that contains
them. Embedding files are only attached when that run has a projector config.

TensorBoard's purge of orphaned data (``RestartPurger``)
-------------------------------------------------------
TensorBoard drops data "orphaned" by a crash + restart (``purge_orphaned_data=True``, the
default). There are two implementations and they differ; ``RestartPurger(semantics=...)``
replicates either, applied per ``RunSource`` (= one TensorBoard run), in file order across
its files, with its state kept across resumes (``RestartPurger.state()``):

``semantics="plugin"`` (default) -- ``plugin_event_accumulator.EventAccumulator``, which
backs everything the TensorBoard UI shows:

* ``file_version`` is parsed from ``brain.Event:<N>`` (the first event of every file all
  current writers emit). If it is >= 2: the FIRST ``SessionLog.START`` event of the run is
  taken as the initial session start and purges nothing; every later START drops every item
  of the run (all tags and kinds) with ``step >= event.step``.
* otherwise (no or older file version): a summary event whose step is lower than
  ``most_recent_step`` drops, for the tags in that event only, items with
  ``step >= event.step``.
* ``most_recent_step`` is set by every summary event, after the check.

``semantics="legacy"`` -- ``event_accumulator.EventAccumulator`` (``_MaybePurgeOrphanedData``,
``_CheckForRestartAndMaybePurge``, ``_CheckForOutOfOrderStepAndMaybePurge``): every START
purges (``step >= event.step``, all tags); without file version >= 2 an out-of-order summary
event purges by tags and any other event sets ``most_recent_step``.

Consequence worth knowing: torch ``SummaryWriter(purge_step=N)`` writes ``file_version`` +
``SessionLog.START`` at step N into a new file. When that is the run's first START (the
usual case: torch never writes START otherwise) the TensorBoard UI does NOT purge and shows
both the old and the new points for steps >= N; the legacy accumulator does purge. We follow
the UI by default.

Duplicate steps are never deduplicated by TensorBoard (all points are shown); neither are
they here. Graphs from ``graph_def``/``meta_graph_def`` events are never purged (TensorBoard
keeps the run graph too). Reservoir sampling (TensorBoard keeps a sample per tag by
default) is deliberately not replicated: Tracker stores all points, i.e. what TensorBoard
shows with every ``size_guidance`` 0.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote

from tracker.ingest.summaries import (
    DecodedBatch,
    FileVersion,
    Graph,
    Item,
    SessionLogEntry,
    is_summary_item,
)

__all__ = [
    "KERAS_SUBDIRS",
    "Purge",
    "RestartPurger",
    "RunPlan",
    "RunSource",
    "UnsafePathError",
    "is_tfevents_file",
    "parse_file_version",
    "plan_runs",
    "safe_relative_path",
    "series_key",
    "tensorboard_view",
    "tfevents_sort_key",
    "walk_logdir",
]

Mode = Literal["merge", "dirs"]

#: Sub-directories the Keras TensorBoard callback writes into; they make their parent a run.
KERAS_SUBDIRS = frozenset({"train", "validation"})

PROJECTOR_CONFIG = "projector_config.pbtxt"
_EMBEDDING_EXTS = (".tsv", ".bytes", ".bin")
_SPRITE_RE = re.compile(r"sprite.*\.(png|jpe?g)$", re.IGNORECASE)
_TIMESTAMP_RE = re.compile(r"tfevents\.(\d+)")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A path from an untrusted source that must not be used."""


# Characters some layer (a browser, a Windows tool, a later NFKC step) may read as a slash.
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f5\u29f8\u29f9\u2216\ufe68\uff0f\uff3c")


def unsafe_segment(part: str) -> str | None:
    """Why one path segment could turn into "..", "." or a separator downstream, else None.

    The segment is checked as given, percent-decoded (once and twice) and NFKC-folded
    ("\u2024\u2024" ONE DOT LEADER and "\uff0e" FULLWIDTH FULL STOP fold to dots, "\uff0f" to a
    slash): whichever form a later layer sees, it must not climb out of its directory.
    """
    once = unquote(part)
    forms = {part, once, unquote(once)}
    forms |= {unicodedata.normalize("NFKC", f) for f in forms}
    for form in forms:
        if form in (".", ".."):
            return "a '.' or '..' segment in disguise"
        if "/" in form or "\\" in form:
            return "an encoded or look-alike path separator"
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in form):
            return "a control character"
        if _SLASH_LOOKALIKES.intersection(form):
            return "a look-alike path separator"
    return None


def safe_relative_path(path: str) -> str:
    """Return ``path`` normalised (no ``.``/empty components), or raise UnsafePathError."""
    if not isinstance(path, str):
        raise UnsafePathError(f"path must be a str, not {type(path).__name__}")
    if "\x00" in path:
        raise UnsafePathError(f"path contains a NUL byte: {path!r}")
    if "\\" in path:
        raise UnsafePathError(f"path contains a backslash: {path!r}")
    if path.startswith("/"):
        raise UnsafePathError(f"absolute path: {path!r}")
    if _DRIVE_RE.match(path):
        raise UnsafePathError(f"drive-qualified path: {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"path escapes its root: {path!r}")
    for part in parts:
        if why := unsafe_segment(part):
            raise UnsafePathError(f"path has {why}: {path!r}")
    if not parts:
        raise UnsafePathError(f"empty path: {path!r}")
    return "/".join(parts)


def is_tfevents_file(path: str) -> bool:
    """TensorBoard's rule (``io_wrapper.IsSummaryEventsFile``): basename contains "tfevents"."""
    return "tfevents" in path.rsplit("/", 1)[-1]


def tfevents_sort_key(path: str) -> tuple[int, int, str]:
    """Order of tfevents files within one directory: timestamp, then name."""
    name = path.rsplit("/", 1)[-1]
    m = _TIMESTAMP_RE.search(name)
    if m:
        return (0, int(m.group(1)), name)
    return (1, 0, name)


def series_key(prefix: str, tag: str) -> str:
    """Key of a series: the source's prefix (if any) joined to the tag with "/"."""
    return f"{prefix}/{tag}" if prefix else tag


@dataclass(frozen=True, slots=True)
class RunSource:
    """One TensorBoard run (directory) feeding a Tracker run."""

    directory: str  # relative directory, "." for the logdir root
    prefix: str  # series-key prefix ("" for the run's own directory)
    files: tuple[str, ...]  # relative tfevents paths, in read order


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One Tracker run: where it lives, what to read, what to attach."""

    path: str  # relative directory of the run, "." for the logdir root
    name: str  # display name
    sources: tuple[RunSource, ...]
    artifacts: tuple[str, ...] = ()


def _parent(d: str) -> str:
    if d == ".":
        return "."
    return d.rsplit("/", 1)[0] if "/" in d else "."


def _ancestors_or_self(d: str) -> list[str]:
    """``a/b/c`` -> ``["a/b/c", "a/b", "a", "."]``."""
    out = [d]
    while d != ".":
        d = _parent(d)
        out.append(d)
    return out


def _relative(d: str, root: str) -> str:
    if root == ".":
        return d if d != "." else ""
    if d == root:
        return ""
    return d[len(root) + 1 :]


def _is_embedding_file(name: str) -> bool:
    return (
        name.endswith(_EMBEDDING_EXTS)
        or name == "bookmarks.txt"
        or _SPRITE_RE.search(name) is not None
    )


_TORCH_HPARAMS_DIR = re.compile(r"\d{9,}\.\d+")


def _unprefix_single_hparams_session(srcs: list[RunSource]) -> list[RunSource]:
    """torch's ``add_hparams`` writes into ``<run>/<time.time()>``. With the timestamp as key
    prefix every run would get its own metric key (``1712345678.12/hparam/acc``) and no two
    runs could be compared on it, so a run's only such session merges unprefixed
    (``hparam/acc``). Several sessions in one run keep their prefixes to stay apart."""
    sessions = [i for i, s in enumerate(srcs) if _TORCH_HPARAMS_DIR.fullmatch(s.prefix)]
    if len(sessions) != 1:
        return srcs
    i = sessions[0]
    out = list(srcs)
    out[i] = RunSource(srcs[i].directory, "", srcs[i].files)
    return out


def plan_runs(
    relative_paths: Iterable[str], mode: Mode = "merge", root_name: str | None = None
) -> list[RunPlan]:
    """Plan Tracker runs from POSIX relative file paths (see module docstring).

    Every path goes through :func:`safe_relative_path` (so this raises ``UnsafePathError``
    for an unsafe one). Runs are returned sorted by path.
    """
    if mode not in ("merge", "dirs"):
        raise ValueError(f"unknown mode {mode!r}")
    files = sorted({safe_relative_path(p) for p in relative_paths})
    by_dir: dict[str, list[str]] = {}
    others: list[str] = []
    for f in files:
        if is_tfevents_file(f):
            by_dir.setdefault(_parent(f), []).append(f)
        else:
            others.append(f)

    # Map each tfevents directory to its run root.
    run_of: dict[str, str] = {}
    if mode == "dirs":
        run_of = {d: d for d in by_dir}
    else:
        anchors = {
            d: (_parent(d) if d != "." and d.rsplit("/", 1)[-1] in KERAS_SUBDIRS else d)
            for d in by_dir
        }
        roots = set(anchors.values())
        for d, anchor in anchors.items():
            # Shallowest run root among the anchor and its ancestors: nesting is transitive.
            run_of[d] = next(a for a in reversed(_ancestors_or_self(anchor)) if a in roots)

    sources: dict[str, list[RunSource]] = {}
    for d in sorted(by_dir):
        root = run_of[d]
        ordered = tuple(sorted(by_dir[d], key=tfevents_sort_key))
        sources.setdefault(root, []).append(RunSource(d, _relative(d, root), ordered))
    if mode == "merge":
        for root, srcs in sources.items():
            sources[root] = _unprefix_single_hparams_session(srcs)

    # Artifacts: attach to the run owning the nearest enclosing tfevents dir or run root.
    owner_dirs = dict(run_of)
    owner_dirs.update({r: r for r in sources})
    artifacts: dict[str, list[str]] = {r: [] for r in sources}
    embedding_candidates: dict[str, list[str]] = {r: [] for r in sources}
    has_projector: set[str] = set()
    for f in others:
        name = f.rsplit("/", 1)[-1]
        if name != PROJECTOR_CONFIG and not _is_embedding_file(name):
            continue
        owner = next(
            (owner_dirs[a] for a in _ancestors_or_self(_parent(f)) if a in owner_dirs), None
        )
        if owner is None:
            continue
        if name == PROJECTOR_CONFIG:
            artifacts[owner].append(f)
            has_projector.add(owner)
        else:
            embedding_candidates[owner].append(f)
    for r in has_projector:
        artifacts[r].extend(embedding_candidates[r])

    plans = []
    for root in sorted(sources):
        name = root if root != "." else (root_name or ".")
        plans.append(RunPlan(root, name, tuple(sources[root]), tuple(sorted(artifacts[root]))))
    return plans


def walk_logdir(path: str | os.PathLike[str], mode: Mode = "merge") -> list[RunPlan]:
    """``plan_runs`` over the files below a local directory (symlinks not followed)."""
    root = os.fspath(path)
    rel: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = os.path.relpath(dirpath, root)
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            rel.append(PurePosixPath(*(os.path.join(base, fn).split(os.sep))).as_posix())
    name = os.path.basename(os.path.normpath(os.path.abspath(root))) or "."
    return plan_runs(rel, mode=mode, root_name=name)


# --------------------------------------------------------------------------- purge


def parse_file_version(file_version: str) -> float:
    """TensorBoard's ``event_util.ParseFileVersion``: ``"brain.Event:2"`` -> 2.0, bad -> -1."""
    try:
        return float(file_version.split("brain.Event:")[-1])
    except ValueError:
        return -1.0


@dataclass(frozen=True, slots=True)
class Purge:
    """Drop previously stored data of the same source with ``step >= min_step``.

    ``tags`` None means every tag (a ``SessionLog.START`` restart); otherwise only those raw
    (unprefixed) tags. ``offset`` is the record that triggered it. Items of the batch being
    applied are already filtered; a ``Purge`` concerns data stored from earlier batches, so
    apply it before storing the returned batch.
    """

    min_step: int
    tags: frozenset[str] | None
    offset: int


def _filter_batch(
    batch: DecodedBatch, min_step: int, tags: frozenset[str] | None, before: int | None
) -> int:
    """Remove, in place, purgeable data with step >= min_step (and offset < before)."""

    def doomed(offset: int, step: int, tag: str) -> bool:
        return (
            step >= min_step
            and (before is None or offset < before)
            and (tags is None or tag in tags)
        )

    keep = [
        i
        for i, (o, s, t) in enumerate(
            zip(batch.scalar_offsets, batch.scalar_steps, batch.scalar_tags, strict=True)
        )
        if not doomed(o, s, t)
    ]
    removed = len(batch.scalar_steps) - len(keep)
    if removed:
        batch.scalar_tags = [batch.scalar_tags[i] for i in keep]
        batch.scalar_steps = [batch.scalar_steps[i] for i in keep]
        batch.scalar_wall_times = [batch.scalar_wall_times[i] for i in keep]
        batch.scalar_values = [batch.scalar_values[i] for i in keep]
        batch.scalar_offsets = [batch.scalar_offsets[i] for i in keep]
    items = [
        (o, it) for o, it in batch.items if not (is_summary_item(it) and doomed(o, it.step, it.tag))
    ]
    removed += len(batch.items) - len(items)
    batch.items = items
    return removed


Semantics = Literal["plugin", "legacy"]


class RestartPurger:
    """TensorBoard's ``purge_orphaned_data`` for ONE TensorBoard run (a ``RunSource``)."""

    def __init__(
        self, state: Mapping[str, Any] | None = None, *, semantics: Semantics = "plugin"
    ) -> None:
        if semantics not in ("plugin", "legacy"):
            raise ValueError(f"unknown semantics {semantics!r}")
        self.semantics = semantics
        self.file_version: float | None = None
        self.most_recent_step = -1
        self.most_recent_wall_time = -1.0
        self.seen_session_start = False
        #: Number of items/points dropped from batches so far (for reporting).
        self.purged = 0
        if state:
            fv = state.get("file_version")
            self.file_version = None if fv is None else float(fv)
            self.most_recent_step = int(state.get("most_recent_step", -1))
            self.most_recent_wall_time = float(state.get("most_recent_wall_time", -1.0))
            self.seen_session_start = bool(state.get("seen_session_start", False))
            self.purged = int(state.get("purged", 0))
            self.semantics = state.get("semantics", semantics)

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state; pass to ``RestartPurger(state)`` to resume."""
        return {
            "semantics": self.semantics,
            "file_version": self.file_version,
            "most_recent_step": self.most_recent_step,
            "most_recent_wall_time": self.most_recent_wall_time,
            "seen_session_start": self.seen_session_start,
            "purged": self.purged,
        }

    def _v2(self) -> bool:
        # TensorBoard: `if self.file_version and self.file_version >= 2` (-1 is truthy).
        return bool(self.file_version) and self.file_version >= 2  # type: ignore[operator]

    def _on_start(self, step: int, offset: int, purges: list[Purge]) -> None:
        if self.semantics == "plugin" and not self.seen_session_start:
            self.seen_session_start = True  # the initial session start is not a restart
            return
        purges.append(Purge(step, None, offset))

    def apply(self, batch: DecodedBatch) -> tuple[DecodedBatch, list[Purge]]:
        """Filter ``batch`` in place and return it with the purges for earlier data."""
        plugin = self.semantics == "plugin"
        markers = [
            (o, it) for o, it in batch.items if isinstance(it, FileVersion | SessionLogEntry)
        ]
        versions = [
            parse_file_version(it.version) for _, it in markers if isinstance(it, FileVersion)
        ]
        if not self._v2() and markers and isinstance(markers[0][1], FileVersion):
            # Every writer starts a file with a file_version event; when it precedes all data
            # of the batch, the whole batch is judged under that version.
            first_item = next(
                (o for o, it in batch.items if not isinstance(it, FileVersion | SessionLogEntry)),
                1 << 62,
            )
            first_scalar = batch.scalar_offsets[0] if batch.scalar_offsets else 1 << 62
            if markers[0][0] < min(first_item, first_scalar):
                self.file_version = versions[0]
        purges: list[Purge] = []
        if self._v2() and all(v >= 2 for v in versions):
            # Version 2 reacts to SessionLog.START only: no need to walk the scalar events.
            for offset, it in markers:
                if isinstance(it, FileVersion):
                    self.file_version = parse_file_version(it.version)
                elif it.status == "START":
                    self._on_start(it.step, offset, purges)
            if plugin:
                last = self._last_summary_event(batch)
                if last is not None:
                    self.most_recent_step, self.most_recent_wall_time = last
        else:
            for offset, step, wall, has_summary, tags, event_items in self._events(batch, plugin):
                for it in event_items:
                    if isinstance(it, FileVersion):
                        self.file_version = parse_file_version(it.version)
                if self._v2():
                    if any(
                        isinstance(it, SessionLogEntry) and it.status == "START"
                        for it in event_items
                    ):
                        self._on_start(step, offset, purges)
                elif step < self.most_recent_step and has_summary:
                    purges.append(Purge(step, frozenset(tags), offset))
                elif not plugin:
                    self.most_recent_step = step
                    self.most_recent_wall_time = wall
                if plugin and has_summary:
                    self.most_recent_step = step
                    self.most_recent_wall_time = wall
        for p in purges:
            self.purged += _filter_batch(batch, p.min_step, p.tags, p.offset)
        return batch, purges

    @staticmethod
    def _last_summary_event(batch: DecodedBatch) -> tuple[int, float] | None:
        best: tuple[int, int, float] | None = None
        if batch.scalar_offsets:
            best = (batch.scalar_offsets[-1], batch.scalar_steps[-1], batch.scalar_wall_times[-1])
        for o, it in reversed(batch.items):
            if _counts_as_summary(it):
                if best is None or o > best[0]:
                    best = (o, it.step, it.wall_time)
                break
        return None if best is None else (best[1], best[2])

    @staticmethod
    def _events(
        batch: DecodedBatch, plugin: bool
    ) -> Iterable[tuple[int, int, float, bool, set[str], list[Item]]]:
        """Regroup a batch into events: (offset, step, wall, has_summary, tags, items)."""
        so = batch.scalar_offsets
        items = batch.items
        i = j = 0
        ns, ni = len(so), len(items)
        while i < ns or j < ni:
            off = min(so[i] if i < ns else 1 << 62, items[j][0] if j < ni else 1 << 62)
            step: int | None = None
            wall = 0.0
            has_summary = False
            tags: set[str] = set()
            event_items: list[Item] = []
            while i < ns and so[i] == off:
                step, wall = batch.scalar_steps[i], batch.scalar_wall_times[i]
                has_summary = True
                tags.add(batch.scalar_tags[i])
                i += 1
            while j < ni and items[j][0] == off:
                it = items[j][1]
                step, wall = it.step, it.wall_time
                if _counts_as_summary(it, plugin):
                    has_summary = True
                    tags.add(it.tag)
                event_items.append(it)
                j += 1
            yield off, step if step is not None else 0, wall, has_summary, tags, event_items


def _counts_as_summary(item: Item, plugin: bool = True) -> bool:
    """Whether the item's event counts as a summary event for the step bookkeeping.

    TensorBoard's plugin accumulator also turns ``graph_def`` events into a summary event
    (tag ``__run_graph__``), the legacy one does not; the graph itself is never purged.
    (Both treat ``tagged_run_metadata`` alike here: as a summary, which is exact for the
    plugin accumulator only.)
    """
    return is_summary_item(item) or (
        plugin and isinstance(item, Graph) and item.kind == "graph_def"
    )


def tensorboard_view(
    batches: Iterable[DecodedBatch], purger: RestartPurger | None = None
) -> DecodedBatch:
    """Merge the decoded batches of ONE source and apply TensorBoard's purge semantics.

    Returns exactly the data TensorBoard would show (with ``size_guidance`` 0), in file
    order. Meant for in-memory use and tests; the importer uses ``RestartPurger.apply``.
    """
    purger = purger or RestartPurger()
    acc = DecodedBatch()
    for b in batches:
        kept, purges = purger.apply(b)
        for p in purges:
            purger.purged += _filter_batch(acc, p.min_step, p.tags, None)
        acc.extend(kept)
    return acc
