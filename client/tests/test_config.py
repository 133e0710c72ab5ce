import json
import os
import stat

import pytest
from tracker_client.config import (
    DEFAULT_URL,
    ConfigError,
    config_path,
    resolve,
    save_login,
)


def test_login_file_is_0600(tmp_path):
    path = save_login("http://tracker.example:8000/", "trk_abcdefgh_secret")
    assert path == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "url": "http://tracker.example:8000",
        "token": "trk_abcdefgh_secret",
    }
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_login_file_stays_0600_even_with_permissive_umask():
    old = os.umask(0)
    try:
        path = save_login("http://a:1", "t1")
        path.chmod(0o644)
        save_login("http://a:1", "t2")  # re-login rewrites with 0600 again
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_precedence_explicit_env_file(monkeypatch):
    assert resolve().url == DEFAULT_URL and resolve().token is None
    save_login("http://file:1", "file-token")
    assert (resolve().url, resolve().token) == ("http://file:1", "file-token")
    monkeypatch.setenv("TRACKER_TOKEN", "env-token")
    monkeypatch.setenv("TRACKER_PROJECT", "ws/env")
    assert (resolve().url, resolve().token, resolve().project) == (
        "http://file:1",
        "env-token",
        "ws/env",
    )
    settings = resolve(url="http://file:1", token="arg-token", project="ws/arg")
    assert (settings.token, settings.project) == ("arg-token", "ws/arg")


def test_saved_token_is_not_sent_to_another_server(monkeypatch):
    save_login("http://file:1", "file-token")
    monkeypatch.setenv("TRACKER_URL", "http://other:2")
    settings = resolve()
    assert settings.url == "http://other:2" and settings.token is None
    with pytest.raises(ConfigError, match="no API token"):
        settings.require_token()


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000", "http://", ""])
def test_bad_urls(url):
    with pytest.raises(ConfigError):
        resolve(url=url or " ")


def test_bad_project():
    with pytest.raises(ConfigError, match="workspace/project"):
        resolve(project="just-a-project")


def test_corrupt_config_file_is_ignored():
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert resolve().url == DEFAULT_URL
