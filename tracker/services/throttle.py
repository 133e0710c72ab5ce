"""Failure throttles against guessing: passwords (per username and per address) and share-link
secrets (per address).

Only failures count, in fixed windows held in the Django cache (Redis when REDIS_URL is set,
which a multi-process deployment needs so that every web worker sees the same counters). Once a
key is over its limit, *every* attempt on it is refused until the window ends, the correct
password or a valid link included: answering those would keep the guessing oracle open.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


@dataclass(frozen=True)
class Limit:
    name: str
    setting: str  # settings.TRACKER_THROTTLES key: (max failures, window seconds)
    default: tuple[int, int]

    def params(self) -> tuple[int, int]:
        conf = getattr(settings, "TRACKER_THROTTLES", {}) or {}
        failures, window = conf.get(self.setting, self.default)
        return int(failures), int(window)


# An address may mistype a few different accounts (a shared office NAT), so its limit is higher
# than a single username's; a single username gets 10 tries per 5 minutes.
LOGIN_USER = Limit("login-user", "login_user", (10, 300))
LOGIN_IP = Limit("login-ip", "login_ip", (50, 300))
SHARE_IP = Limit("share-ip", "share_ip", (30, 300))


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address the trusted reverse proxy put last in X-Forwarded-For.

    Forwarded headers are only believed when TRACKER_TRUSTED_PROXIES says a proxy sits in front:
    otherwise any caller could pick a fresh address per attempt.
    """
    hops = int(getattr(settings, "TRACKER_TRUSTED_PROXIES", 0) or 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if hops > 0 and forwarded:
        chain = [a.strip() for a in forwarded.split(",") if a.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return str(request.META.get("REMOTE_ADDR", "") or "unknown")


def _key(limit: Limit, ident: str, window: int, now: float) -> str:
    # Hashed: usernames are attacker-chosen text and must not shape cache keys.
    digest = hashlib.sha256(ident.strip().lower().encode()).hexdigest()[:32]
    return f"thr:{limit.name}:{digest}:{int(now // window)}"


def retry_after(limit: Limit, ident: str) -> int:
    """Seconds until `ident` may try again (0: not blocked)."""
    failures, window = limit.params()
    now = time.time()
    count = cache.get(_key(limit, ident, window, now), 0)
    if count < failures:
        return 0
    return max(1, int(window - now % window))


def record_failure(limit: Limit, ident: str) -> None:
    _, window = limit.params()
    key = _key(limit, ident, window, time.time())
    if not cache.add(key, 1, timeout=window + 1):
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=window + 1)


def reset(limit: Limit, ident: str) -> None:
    _, window = limit.params()
    cache.delete(_key(limit, ident, window, time.time()))
