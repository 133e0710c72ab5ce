import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tracker_client import Run
from tracker_client.cli import main
from tracker_client.config import config_path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "required: COMMAND"),
        (["bogus"], "invalid choice"),
        (["upload"], "required"),
        (["upload", "logs"], "--project"),
        (["upload", "logs", "--project", "p", "--runs", "weird"], "invalid choice"),
        (["export", "--project", "ws/p", "--format", "csv"], "invalid choice"),
        (["runs", "--limit", "many", "--project", "ws/p"], "invalid int"),
    ],
)
def test_argument_errors_exit_2_with_one_line_message(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err


def test_bad_values_are_usage_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "runs", "--project", "no-slash", "--token", "t")
    assert code == 2 and "workspace/project" in err
    code, _, err = run_cli(capsys, "upload", str(tmp_path / "missing"), "--project", "ws/p")
    assert code == 2 and "not a directory" in err
    code, _, err = run_cli(capsys, "runs", "--project", "ws/p", "--url", "ftp://x", "--token", "t")
    assert code == 2 and "invalid Tracker URL" in err


def test_missing_token(capsys):
    code, _, err = run_cli(capsys, "runs", "--project", "ws/p")
    assert code == 2
    assert "no API token" in err and "tracker login" in err


def test_unreachable_server(capsys, closed_port_url, tmp_path):
    for argv in (
        ["runs", "--project", "ws/p"],
        ["export", "--project", "ws/p", "-o", str(tmp_path / "out.json")],
        ["upload", str(tmp_path), "--project", "ws/p"],
    ):
        (tmp_path / "events.out.tfevents.1.host").write_bytes(b"x")
        code, _, err = run_cli(capsys, *argv, "--url", closed_port_url, "--token", "t")
        assert code == 1
        assert err.startswith("tracker: error: cannot reach Tracker at http://127.0.0.1:")
        assert len(err.strip().splitlines()) == 1


def test_login_against_unreachable_server_stores_nothing(capsys, closed_port_url):
    code, _, err = run_cli(capsys, "login", "--url", closed_port_url, "--token", "t")
    assert code == 1 and "cannot reach" in err
    assert not config_path().exists()


def test_login_verifies_and_stores_0600(capsys, stub_server):
    stub = stub_server(lambda req: (200, {}, {"id": 1, "username": "alice", "workspaces": []}))
    code, out, _ = run_cli(capsys, "login", "--url", stub.url, "--token", "trk_a_b")
    assert code == 0 and "alice" in out
    assert stub.requests[0].path == "/api/v1/me/"
    assert stub.requests[0].headers["authorization"] == "Bearer trk_a_b"
    assert stat.S_IMODE(config_path().stat().st_mode) == 0o600


def test_http_4xx_prints_server_message(capsys, stub_server):
    stub = stub_server(
        lambda req: (401, {}, {"error": {"code": "invalid_token", "message": "Token revoked"}})
    )
    code, _, err = run_cli(capsys, "runs", "--project", "ws/p", "--url", stub.url, "--token", "t")
    assert code == 1
    assert "Token revoked" in err and "401" in err


def test_sync_nothing_and_dry_run(capsys, closed_port_url):
    code, out, _ = run_cli(capsys, "sync")
    assert code == 0 and "Nothing to sync" in out
    run = Run(
        project="ws/p", name="offline-run", url=closed_port_url, offline=True, telemetry=False
    )
    for step in range(10):
        run.log({"a": step, "b": step})
    run.finish()
    code, out, _ = run_cli(capsys, "sync", "--dry-run")
    assert code == 0
    assert "offline-run" in out and "20 points" in out
    # a real sync against the unreachable server fails cleanly and keeps the journal
    code, out, _ = run_cli(capsys, "sync", "--token", "t")
    assert code == 1 and "cannot reach" in out and "still pending" in out


def test_console_script_never_prints_a_traceback(closed_port_url, tmp_path):
    env = {**os.environ, "TRACKER_URL": closed_port_url, "TRACKER_TOKEN": "t"}
    script = Path(sys.executable).with_name("tracker")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tracker_client.cli"]
    proc = subprocess.run(
        [*cmd, "runs", "--project", "ws/p"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("tracker: error: cannot reach Tracker")
