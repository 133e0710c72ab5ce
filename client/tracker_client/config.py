"""Where the client finds its server, token and default project.

Precedence is explicit argument > environment (`TRACKER_URL`, `TRACKER_TOKEN`,
`TRACKER_PROJECT`) > user config file (written by `tracker login`) > built-in default.
The token from the config file is only used for the URL it was stored with, so pointing
`TRACKER_URL` at another server never leaks the saved credential to it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("tracker_client")

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_FILENAME = "config.json"
# How long the server may be unreachable before batches go to the disk journal. Short enough
# that a dead server does not pin much memory, long enough to ride out a server restart.
DEFAULT_OFFLINE_GRACE = 10.0

_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """Configuration is missing or malformed (bad URL, no token, bad project slug)."""


def config_dir() -> Path:
    """Directory of the user config file (`$TRACKER_CONFIG_DIR` or XDG config home)."""
    env = os.environ.get("TRACKER_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tracker"


def config_path() -> Path:
    return config_dir() / CONFIG_FILENAME


def cache_dir() -> Path:
    """Root for the offline journal and artifact resume state (`$TRACKER_CACHE_DIR`)."""
    env = os.environ.get("TRACKER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tracker"


def journal_root() -> Path:
    return cache_dir() / "journal"


def normalize_url(url: str) -> str:
    """Strip trailing slashes and reject anything that is not an absolute http(s) URL."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"invalid Tracker URL {url!r}: expected http(s)://host[:port]")
    return url


def validate_project(project: str) -> str:
    if not _PROJECT_RE.match(project):
        raise ConfigError(f"invalid project {project!r}: expected 'workspace/project'")
    return project


def load_file_config() -> dict[str, Any]:
    """Read the user config file; a missing or corrupt file counts as empty."""
    path = config_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        logger.warning("ignoring corrupt Tracker config file %s", path)
        return {}
    if not isinstance(data, dict):
        return {}
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and os.name == "posix":
            logger.warning("%s is readable by other users (mode %o); run `chmod 600`", path, mode)
    except OSError:
        pass
    return data


def save_login(url: str, token: str) -> Path:
    """Store url+token in the user config file, created with mode 0600.

    Written to a temp file and renamed so a crash never leaves a half-written file, and the
    mode is set on the descriptor before any secret byte is written.
    """
    url = normalize_url(url)
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = load_file_config()
    data.update({"url": url, "token": token})
    path = directory / CONFIG_FILENAME
    tmp = directory / f".{CONFIG_FILENAME}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask cannot widen it, but a pre-existing tmp could be wider
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        if fd != -1:
            os.close(fd)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    project: str | None
    offline_grace: float = DEFAULT_OFFLINE_GRACE

    def require_token(self) -> str:
        if not self.token:
            raise ConfigError(
                "no API token: set TRACKER_TOKEN, pass token=..., or run `tracker login`"
            )
        return self.token


def resolve(
    url: str | None = None, token: str | None = None, project: str | None = None
) -> Settings:
    """Merge explicit arguments, environment and config file into Settings."""
    file_cfg = load_file_config()
    raw_url = url or os.environ.get("TRACKER_URL") or file_cfg.get("url") or DEFAULT_URL
    resolved_url = normalize_url(str(raw_url))
    resolved_token = token or os.environ.get("TRACKER_TOKEN") or None
    if resolved_token is None and file_cfg.get("token"):
        file_url = file_cfg.get("url")
        try:
            same_server = file_url is not None and normalize_url(str(file_url)) == resolved_url
        except ConfigError:
            same_server = False
        if same_server:
            resolved_token = str(file_cfg["token"])
    resolved_project = project or os.environ.get("TRACKER_PROJECT") or file_cfg.get("project")
    if resolved_project:
        validate_project(str(resolved_project))
    grace_env = os.environ.get("TRACKER_OFFLINE_GRACE")
    try:
        grace = float(grace_env) if grace_env else DEFAULT_OFFLINE_GRACE
    except ValueError:
        grace = DEFAULT_OFFLINE_GRACE
    return Settings(
        url=resolved_url,
        token=resolved_token,
        project=str(resolved_project) if resolved_project else None,
        offline_grace=grace,
    )


def server_dirname(url: str) -> str:
    """Filesystem-safe name for a server, used to separate journals of different servers."""
    netloc = urlsplit(url).netloc or "local"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", netloc)
