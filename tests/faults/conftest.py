"""Fault tests reuse the live-logging fixtures: a gunicorn on the test database and an isolated
client cache/config directory."""

from tests.live.conftest import client_env, gunicorn, server_env  # noqa: F401
