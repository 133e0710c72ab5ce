"""Rate limits per token / share link / user, and per address for anonymous callers."""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from tracker.models import ApiToken, ShareLink


class PrincipalRateThrottle(SimpleRateThrottle):
    scope = "principal"

    def get_cache_key(self, request, view):  # type: ignore[no-untyped-def]
        auth = request.auth
        if isinstance(auth, ApiToken):
            ident = f"token:{auth.pk}"
        elif isinstance(auth, ShareLink):
            ident = f"share:{auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            self.rate = (
                self.THROTTLE_RATES.get("anon", self.rate)
                if hasattr(self, "THROTTLE_RATES")
                else self.rate
            )
            self.num_requests, self.duration = self.parse_rate(self.get_anon_rate())
            ident = f"anon:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def get_anon_rate(self) -> str:
        from django.conf import settings

        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["anon"]
