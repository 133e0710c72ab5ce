"""Shared plumbing of the web views: the principal, the scope a page lives in, error pages.

Every page resolves its objects through tracker.access. A page is either reached as a
signed-in user under `/<ws>/<project>/...` or through a share link under `/s/<token>/...`;
`Scope` carries which, so templates build every link from `scope.base` and a shared view
never links outside its token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from .. import access
from ..access import Principal
from ..models import Project, ShareLink
from ..services.sharing import resolve_share_secret


def web_principal(request: HttpRequest) -> Principal:
    """The signed-in user of a web request (anonymous: a principal without user)."""
    user = request.user if request.user.is_authenticated else None
    return Principal(user=user)


@dataclass
class Scope:
    """Where a page lives: its principal, project, base URL and whether it is a share view."""

    principal: Principal
    project: Project
    base: str  # "/acme/vision/" or "/s/<token>/"
    role: str | None
    share_link: ShareLink | None = None
    share_token: str = ""

    @property
    def shared(self) -> bool:
        return self.share_link is not None

    @property
    def can_write(self) -> bool:
        return not self.shared and access.has_role(self.role, access.CONTRIBUTOR)

    @property
    def is_owner(self) -> bool:
        return not self.shared and access.has_role(self.role, access.OWNER)

    @property
    def api_query(self) -> str:
        """Query string the JSON API needs to authenticate a share view (`?share=`)."""
        return f"share={self.share_token}" if self.shared else ""


def project_scope(request: HttpRequest, ws: str, project: str, need: str = access.VIEWER) -> Scope:
    p = web_principal(request)
    proj = access.get_project(p, ws, project, need=need)
    return Scope(
        principal=p,
        project=proj,
        base=f"/{proj.workspace.slug}/{proj.slug}/",
        role=access.project_role(p, proj),
    )


def share_scope(token: str) -> Scope:
    """A share link's scope; unknown, revoked and expired links are simply not found."""
    link = resolve_share_secret(token)
    if link is None:
        raise access.NotVisible()
    p = Principal(share_link=link)
    return Scope(
        principal=p,
        project=link.project,
        base=f"/s/{token}/",
        role=access.VIEWER,
        share_link=link,
        share_token=token,
    )


def not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "web/404.html", status=404)


def forbidden(request: HttpRequest, message: str = "") -> HttpResponse:
    return render(request, "web/403.html", {"message": message}, status=403)


def web_view(func: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Maps access errors to pages: not visible → 404 (or login for anonymous), not allowed → 403.

    Anonymous visitors of a private page are sent to log in: for them "not visible" most
    likely means "not signed in", and the login page reveals nothing about the object.
    """

    @wraps(func)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return func(request, *args, **kwargs)
        except (access.NotVisible, Http404):
            shared = request.path.startswith("/s/")
            if not request.user.is_authenticated and not shared and _wants_html(request):
                return redirect_to_login(request.get_full_path())
            return not_found(request)
        except access.NotAllowed as exc:
            if not request.user.is_authenticated and _wants_html(request):
                return redirect_to_login(request.get_full_path())
            return forbidden(request, exc.message)

    return wrapper


def _wants_html(request: HttpRequest) -> bool:
    return "/data/" not in request.path and request.method == "GET"


def int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
