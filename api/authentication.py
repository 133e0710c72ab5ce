"""Bearer API tokens, share-link tokens and the web session, as DRF authenticators.

`request.auth` carries the ApiToken or ShareLink; `principal(request)` turns the pair into the
`tracker.access.Principal` every view resolves objects with.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions

from tracker.access import Principal
from tracker.models import ApiToken, ShareLink
from tracker.services import throttle
from tracker.services.sharing import resolve_share_secret, resolve_token_secret


class ServiceAccountUser(AnonymousUser):
    """Stands in for request.user when a workspace service-account token authenticates."""

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed token.") from None
        token = resolve_token_secret(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        user = token.user if token.user is not None else ServiceAccountUser()
        return user, token

    def authenticate_header(self, request) -> str:  # type: ignore[no-untyped-def]
        return 'Bearer realm="api"'


class ShareLinkAuthentication(authentication.BaseAuthentication):
    """`?share=<token>` or `X-Share-Token:`; grants viewer on the link's scope only."""

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        secret = request.query_params.get("share") or request.META.get("HTTP_X_SHARE_TOKEN")
        if not secret:
            return None
        # Failed lookups are throttled per address (tracker/services/throttle.py); once over
        # the limit every lookup from there is refused, valid or not, so guessing stays blind.
        ip = throttle.client_ip(request)
        wait = throttle.retry_after(throttle.SHARE_IP, ip)
        if wait:
            raise exceptions.Throttled(wait=wait, detail="Too many invalid share links.")
        link = resolve_share_secret(secret)
        if link is None:
            throttle.record_failure(throttle.SHARE_IP, ip)
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked share link.")
        return AnonymousUser(), link


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """Django session (web UI); DRF enforces CSRF for unsafe methods."""


def principal(request) -> Principal:  # type: ignore[no-untyped-def]
    cached = getattr(request, "_tracker_principal", None)
    if cached is not None:
        return cached
    auth = getattr(request, "auth", None)
    user = getattr(request, "user", None)
    token = auth if isinstance(auth, ApiToken) else None
    link = auth if isinstance(auth, ShareLink) else None
    real_user = (
        user
        if (user is not None and user.is_authenticated and not isinstance(user, ServiceAccountUser))
        else None
    )
    p = Principal(user=real_user, token=token, share_link=link)
    request._tracker_principal = p
    return p
