"""Passwords hashed with Django's default hasher; API and share secrets stored as digests only;
passwords never logged."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher, check_password
from django.db import connection
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.real_password_hasher
def test_password_row_uses_the_default_hasher(settings: Any) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    user = get_user_model().objects.create_user("hashed", password=password)
    with connection.cursor() as cur:
        cur.execute("SELECT password FROM auth_user WHERE id = %s", [user.pk])
        (stored,) = cur.fetchone()
    algorithm, iterations, salt, digest = stored.split("$")
    assert settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"
    assert algorithm == "pbkdf2_sha256"
    assert int(iterations) >= PBKDF2PasswordHasher.iterations >= 600_000
    assert len(salt) >= 16 and password not in stored
    assert check_password(password, stored)


def test_token_and_share_secrets_are_digests(api: Any, tenants: Any, token_for: Any) -> None:
    from tracker.models import ApiToken, ShareLink

    secret = token_for(tenants.alice, name="at-rest")
    r = api(tenants.alice).post("/api/v1/projects/acme/vision/share-links/", {}, format="json")
    share = r.json()["token"]
    with connection.cursor() as cur:
        cur.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        token_rows = repr(cur.fetchall())
        cur.execute(f"SELECT * FROM {ShareLink._meta.db_table}")
        link_rows = repr(cur.fetchall())
    assert secret not in token_rows and secret.split("_")[-1] not in token_rows
    assert share not in link_rows and share[10:] not in link_rows
    # The listing shows prefixes only.
    listed = api(tenants.alice).get("/api/v1/tokens/").content.decode()
    assert secret not in listed


def test_passwords_never_reach_the_logs(tenants: Any, caplog: Any) -> None:
    password = f"Secret-{uuid.uuid4().hex}"
    with caplog.at_level(logging.DEBUG):
        Client().post("/login/", {"username": "alice", "password": password})
        Client().post("/login/", {"username": password, "password": password})
    assert password not in caplog.text
