"""Stream the members of an uploaded logdir archive (.tar, .tar.gz, .zip) safely.

Pure (no Django). Nothing is ever extracted to a filesystem path: members are yielded as
(normalized relative path, readable stream) pairs and the caller stores their bytes. An
archive is hostile until proven otherwise, so:

* links (symbolic and hard), devices, FIFOs, absolute paths, ``..`` components, drive
  letters, backslash tricks and control characters make the *member* rejected (reported,
  skipped) while the rest of the archive is still read;
* bombs make the *archive* rejected (`ArchiveRejected`): too many members, more
  decompressed bytes than allowed in total or for one member, or a compression ratio beyond
  the limit once enough bytes came out. Every limit is checked against bytes actually
  produced, not only against sizes the archive declares, so a lying header cannot help.

gzip is decompressed here (not by tarfile) so that even tar headers (pax records can be
huge) are read through the byte budget.
"""

from __future__ import annotations

import gzip
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from .logdir import unsafe_segment

__all__ = [
    "ArchiveLimits",
    "ArchiveManifest",
    "ArchiveMember",
    "ArchiveRejected",
    "RejectedMember",
    "detect_format",
    "iter_members",
    "normalize_member_path",
    "scan",
]

READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_total_bytes: int = 20 << 30
    max_member_bytes: int = 8 << 30
    # Decompressed / compressed. Scalar-only tfevents files reach ~5-10x; zeros reach 1000x.
    max_ratio: float = 100.0
    # The ratio is only meaningful once this many bytes came out (tiny text files compress
    # wildly but harmlessly).
    ratio_floor: int = 8 << 20


class ArchiveRejected(Exception):
    """The whole archive is refused; `code` is a stable slug for the API error body."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RejectedMember:
    name: str
    kind: str  # symlink | hardlink | device | absolute_path | path_traversal | unsafe_path | ...
    message: str


@dataclass
class ArchiveMember:
    path: str
    size: int
    stream: IO[bytes]

    def iter_chunks(self, size: int = READ_BLOCK) -> Iterator[bytes]:
        while block := self.stream.read(size):
            yield block


@dataclass
class ArchiveManifest:
    format: str
    files: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[RejectedMember] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def detect_format(head: bytes) -> str:
    """'zip', 'tar.gz' or 'tar' from the first bytes; anything else is not an archive."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if len(head) >= 512 and _looks_like_v7_tar(head[:512]):
        return "tar"
    raise ArchiveRejected("bad_archive", "The file is not a .tar, .tar.gz or .zip archive.")


def _looks_like_v7_tar(block: bytes) -> bool:
    try:
        stored = int(block[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return stored == computed


_DRIVE = tuple(f"{c}:" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def normalize_member_path(name: str) -> tuple[str | None, RejectedMember | None]:
    """A safe relative path ('a/b/c') for a member name, or why it is refused.

    Backslashes count as separators (Windows zip tools write them and "..\\" is a classic
    slip); "." components and a leading "./" are dropped; anything that could climb out of
    the logdir or name a device is refused rather than repaired.
    """
    if not name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return None, RejectedMember(name, "unsafe_path", "Member name has control characters.")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or unified.startswith(_DRIVE):
        return None, RejectedMember(
            name, "absolute_path", "Absolute paths are not allowed in an archive."
        )
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." or unsafe_segment(p) for p in parts):
        return None, RejectedMember(
            name, "path_traversal", "Paths with '..' would leave the logdir; member skipped."
        )
    if not parts:
        return None, RejectedMember(name, "unsafe_path", "Empty member path.")
    path = "/".join(parts)
    if len(path) > 1024 or any(len(p) > 255 for p in parts):
        return None, RejectedMember(name, "unsafe_path", "Member path is too long.")
    return path, None


class _Budget:
    """Counts decompressed bytes against the limits; raises ArchiveRejected when exceeded."""

    def __init__(self, limits: ArchiveLimits, raw: _CountingReader | None) -> None:
        self.limits = limits
        self.raw = raw
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        lim = self.limits
        if self.total > lim.max_total_bytes:
            raise ArchiveRejected(
                "archive_too_large",
                f"The archive expands to more than {lim.max_total_bytes} bytes.",
            )
        if self.raw is not None and self.total > lim.ratio_floor:
            ratio = self.total / max(self.raw.count, 1)
            if ratio > lim.max_ratio:
                raise ArchiveRejected(
                    "archive_bomb",
                    f"The archive expands more than {lim.max_ratio:g}x its size "
                    "(a decompression bomb?).",
                )


class _CountingReader:
    """Counts bytes read from the raw (compressed) upload."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        return data


class _BudgetedReader:
    """A decompressed stream whose every byte is charged to the budget (tar headers too)."""

    def __init__(self, fh: IO[bytes], budget: _Budget) -> None:
        self.fh = fh
        self.budget = budget

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_BLOCK
        try:
            data = self.fh.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveRejected(
                "bad_archive", f"The compressed stream is damaged: {exc}"
            ) from None
        self.budget.add(len(data))
        return data


class _MemberStream:
    """Reads one member, charging its bytes and refusing more than its declared size."""

    def __init__(self, fh: IO[bytes], size: int, budget: _Budget | None, name: str) -> None:
        self.fh, self.left, self.budget, self.name = fh, size, budget, name

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        if n is None or n < 0 or n > self.left:
            n = min(self.left, READ_BLOCK)
        try:
            data = self.fh.read(n)
        except zipfile.BadZipFile as exc:
            raise ArchiveRejected(
                "bad_archive", f"Member {self.name!r} is damaged: {exc}"
            ) from None
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            raise ArchiveRejected(
                "bad_archive", f"Member {self.name!r} is damaged: {exc}"
            ) from None
        if not data:
            raise ArchiveRejected("bad_archive", f"Member {self.name!r} ends early.")
        self.left -= len(data)
        if self.budget is not None:
            self.budget.add(len(data))
        return data


def iter_members(
    fileobj: IO[bytes], fmt: str, limits: ArchiveLimits | None = None
) -> Iterator[ArchiveMember | RejectedMember]:
    """Yield each regular-file member (read its stream before advancing) or why it was skipped.

    `fileobj` must be seekable for zip; tar and tar.gz are read strictly forward.
    """
    limits = limits or ArchiveLimits()
    if fmt == "zip":
        yield from _iter_zip(fileobj, limits)
    elif fmt in ("tar", "tar.gz"):
        yield from _iter_tar(fileobj, fmt, limits)
    else:
        raise ArchiveRejected("bad_archive", f"Unsupported archive format {fmt!r}.")


def _member_count_check(count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise ArchiveRejected(
            "too_many_members", f"The archive has more than {limits.max_members} members."
        )


def _size_check(name: str, size: int, declared_total: int, limits: ArchiveLimits) -> None:
    if size > limits.max_member_bytes:
        raise ArchiveRejected(
            "archive_too_large",
            f"Member {name!r} is larger than {limits.max_member_bytes} bytes.",
        )
    if declared_total > limits.max_total_bytes:
        raise ArchiveRejected(
            "archive_too_large", f"The archive expands to more than {limits.max_total_bytes} bytes."
        )


def _iter_tar(
    fileobj: IO[bytes], fmt: str, limits: ArchiveLimits
) -> Iterator[ArchiveMember | RejectedMember]:
    raw = _CountingReader(fileobj) if fmt == "tar.gz" else None
    budget = _Budget(limits, raw)
    stream: IO[bytes]
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if raw is not None else fileobj  # type: ignore[arg-type]
    budgeted = _BudgetedReader(stream, budget)
    try:
        tar = tarfile.open(fileobj=budgeted, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115 - closed in the finally below
    except tarfile.TarError as exc:
        raise ArchiveRejected("bad_archive", f"Not a readable tar archive: {exc}") from None
    count = 0
    declared = 0
    seen: set[str] = set()
    try:
        while True:
            try:
                info = tar.next()
            except tarfile.TarError as exc:
                raise ArchiveRejected("bad_archive", f"The tar archive is damaged: {exc}") from None
            if info is None:
                break
            count += 1
            _member_count_check(count, limits)
            name = info.name
            if info.isdir():
                continue
            if info.issym():
                yield RejectedMember(name, "symlink", "Symbolic links are not allowed.")
                continue
            if info.islnk():
                yield RejectedMember(name, "hardlink", "Hard links are not allowed.")
                continue
            if info.ischr() or info.isblk() or info.isfifo():
                yield RejectedMember(name, "device", "Device files and FIFOs are not allowed.")
                continue
            if not info.isfile():
                yield RejectedMember(name, "unsupported", "Only regular files are read.")
                continue
            path, why = normalize_member_path(name)
            if why is not None:
                yield why
                continue
            assert path is not None
            if path in seen:
                yield RejectedMember(name, "duplicate", "A member with this path came earlier.")
                continue
            seen.add(path)
            declared += info.size
            _size_check(name, info.size, declared, limits)
            fh = tar.extractfile(info)
            if fh is None:  # pragma: no cover - isfile() members always have data
                continue
            # tarfile already charges the budget through `budgeted`; no second count here.
            yield ArchiveMember(path, info.size, _MemberStream(fh, info.size, None, name))  # type: ignore[arg-type]
    finally:
        tar.close()


def _iter_zip(
    fileobj: IO[bytes], limits: ArchiveLimits
) -> Iterator[ArchiveMember | RejectedMember]:
    try:
        zf = zipfile.ZipFile(fileobj)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ArchiveRejected("bad_archive", f"Not a readable zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        _member_count_check(len(infos), limits)
        declared = 0
        for info in infos:
            if info.is_dir():
                continue
            declared += info.file_size
            _size_check(info.filename, info.file_size, declared, limits)
            if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(
                info.compress_size, 1
            ):
                raise ArchiveRejected(
                    "archive_bomb",
                    f"Member {info.filename!r} expands more than {limits.max_ratio:g}x "
                    "(a decompression bomb?).",
                )
        budget = _Budget(limits, None)
        compressed = sum(i.compress_size for i in infos)
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode:
                if stat.S_ISLNK(mode):
                    yield RejectedMember(name, "symlink", "Symbolic links are not allowed.")
                    continue
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    yield RejectedMember(name, "device", "Device files and FIFOs are not allowed.")
                    continue
                if stat.S_ISSOCK(mode):
                    yield RejectedMember(name, "device", "Sockets are not allowed.")
                    continue
            if info.flag_bits & 0x1:
                yield RejectedMember(name, "encrypted", "Encrypted members cannot be read.")
                continue
            path, why = normalize_member_path(name)
            if why is not None:
                yield why
                continue
            assert path is not None
            if path in seen:
                yield RejectedMember(name, "duplicate", "A member with this path came earlier.")
                continue
            seen.add(path)
            try:
                fh = zf.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                yield RejectedMember(name, "unreadable", f"Cannot read this member: {exc}")
                continue
            with fh:
                yield ArchiveMember(
                    path, info.file_size, _MemberStream(fh, info.file_size, budget, name)
                )  # type: ignore[arg-type]
            if budget.total > limits.ratio_floor and budget.total > limits.max_ratio * max(
                compressed, 1
            ):
                raise ArchiveRejected(
                    "archive_bomb",
                    f"The archive expands more than {limits.max_ratio:g}x its size.",
                )


def scan(fileobj: IO[bytes], fmt: str, limits: ArchiveLimits | None = None) -> ArchiveManifest:
    """Walk the whole archive (reading every byte through the limits) without keeping data.

    Run before anything is stored so that a bomb or an over-full archive is refused with no
    side effect at all.
    """
    manifest = ArchiveManifest(fmt)
    for item in iter_members(fileobj, fmt, limits):
        if isinstance(item, RejectedMember):
            manifest.rejected.append(item)
            continue
        for _ in item.iter_chunks():
            pass
        manifest.files.append((item.path, item.size))
    return manifest
