"""Guessing is throttled: passwords per username and per address, share links per address.

Limits come from settings.TRACKER_THROTTLES (defaults: 10 failed logins per username and 50 per
address per 5 minutes, 30 failed share lookups per address per 5 minutes). Once over a limit,
every attempt is refused with 429 — the right password or a valid link included, or the
guessing would go on with an oracle — and nobody else is affected.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tracker.models import ShareLink
from tracker.services.sharing import create_share_link

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # tests/factories.py


def login(username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return Client(REMOTE_ADDR=ip).post("/login/", {"username": username, "password": password})


def test_login_throttled_per_username(tenants: Any) -> None:
    for _ in range(10):
        r = login("alice", "wrong", ip="10.0.0.1")
        assert r.status_code == 200  # the form again, with its error
        assert b"didn&#x27;t match" in r.content or b"didn't match" in r.content
    # The 11th try is refused before the password is checked — even the right one, from
    # another address (a distributed guesser rotates addresses, not usernames).
    r = login("alice", PASSWORD, ip="10.0.0.2")
    assert r.status_code == 429
    assert int(r["Retry-After"]) > 0
    assert b"Too many" in r.content and b"Try again in" in r.content
    assert "_auth_user_id" not in r.client.session
    # Case and spaces do not make a fresh username.
    assert login(" ALICE ", PASSWORD, ip="10.0.0.3").status_code == 429
    # Others log in normally, from the guesser's address too.
    r = login("bob", PASSWORD, ip="10.0.0.1")
    assert r.status_code == 302 and r.client.session["_auth_user_id"] == str(tenants.bob.pk)


def test_login_throttled_per_address(tenants: Any, settings: Any) -> None:
    settings.TRACKER_THROTTLES = {"login_ip": (5, 300)}
    for i in range(5):
        assert login(f"nobody{i}", "guess", ip="10.9.9.9").status_code == 200
    r = login("bob", PASSWORD, ip="10.9.9.9")  # username never failed; the address did
    assert r.status_code == 429
    # Another address is not affected.
    assert login("bob", PASSWORD, ip="10.9.9.10").status_code == 302


def test_successful_login_resets_the_username_count(tenants: Any) -> None:
    for _ in range(9):
        login("carol", "wrong")
    assert login("carol", PASSWORD).status_code == 302
    for _ in range(9):  # a fresh allowance after a success
        assert login("carol", "wrong").status_code == 200
    assert login("carol", PASSWORD).status_code == 302


def test_forwarded_for_is_ignored_without_a_trusted_proxy(tenants: Any) -> None:
    client = Client(REMOTE_ADDR="10.1.1.1")
    for i in range(50):
        r = client.post(
            "/login/",
            {"username": f"u{i}", "password": "x"},
            HTTP_X_FORWARDED_FOR=f"192.0.2.{i}",
        )
        assert r.status_code == 200
    r = client.post(
        "/login/", {"username": "bob", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="5.6.7.8"
    )
    assert r.status_code == 429  # 50 failures from 10.1.1.1, whatever the header claimed


def _share(tenants: Any) -> tuple[ShareLink, str]:
    return create_share_link(project=tenants.vision, user=tenants.alice)


def test_share_link_guessing_is_throttled_on_web_and_api(tenants: Any) -> None:
    link, secret = _share(tenants)
    web = Client(REMOTE_ADDR="10.2.2.2")
    assert web.get(f"/s/{secret}/").status_code == 200
    for i in range(15):
        assert web.get(f"/s/shr_guess{i}/").status_code == 404
        r = web.get(f"/api/v1/projects/acme/vision/?share=shr_guess{i}")
        assert r.status_code == 401
    # 30 failures (web and API count together): now even the valid link is refused here.
    r = web.get(f"/s/{secret}/")
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    r = web.get(f"/api/v1/projects/acme/vision/?share={secret}")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "throttled"
    assert r.json()["error"]["retry_after"] > 0
    r = web.get("/api/v1/projects/acme/vision/", HTTP_X_SHARE_TOKEN=secret)
    assert r.status_code == 429
    # Another address still opens the link; refused lookups did not count as uses.
    other = Client(REMOTE_ADDR="10.2.2.3")
    assert other.get(f"/s/{secret}/").status_code == 200
    assert other.get(f"/api/v1/projects/acme/vision/?share={secret}").status_code == 200
    link.refresh_from_db()
    assert link.use_count == 3


def test_valid_share_links_do_not_count(tenants: Any) -> None:
    _, secret = _share(tenants)
    web = Client(REMOTE_ADDR="10.3.3.3")
    for _ in range(40):
        assert web.get(f"/api/v1/projects/acme/vision/?share={secret}").status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_counts(tenants: Any, settings: Any) -> None:
    settings.TRACKER_TRUSTED_PROXIES = 1
    settings.TRACKER_THROTTLES = {"login_ip": (3, 300)}
    proxy = Client(REMOTE_ADDR="10.0.0.254")  # every request arrives from the proxy
    for i in range(3):
        proxy.post(
            "/login/", {"username": f"x{i}", "password": "x"}, HTTP_X_FORWARDED_FOR="1.1.1.1"
        )
    r = proxy.post(
        "/login/", {"username": "bob", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="1.1.1.1"
    )
    assert r.status_code == 429
    # Another client behind the same proxy is not blocked; a spoofed first hop is ignored.
    r = proxy.post(
        "/login/",
        {"username": "bob", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2",
    )
    assert r.status_code == 302
