"""The `scoped` decorator: one entry for project pages and their share-link twins.

A view decorated with `@scoped()` is mounted twice, under `/<ws>/<project>/...` and under
`/s/<token>/...`; it receives a `Scope` instead of the URL's ws/project/token arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

from .. import access
from ..models import Run
from ..services import throttle
from .common import Scope, project_scope, share_scope, web_view
from .views import too_many_attempts


def scoped(need: str = access.VIEWER, share_ok: bool = True) -> Callable[..., Any]:
    def deco(func: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @web_view
        @wraps(func)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            token = kwargs.pop("token", None)
            if token is not None:
                if not share_ok:
                    raise access.NotVisible()
                # Failed share lookups are throttled per address: 192-bit secrets cannot be
                # guessed, but unbounded tries would still be a free oracle and a DB load.
                ip = throttle.client_ip(request)
                wait = throttle.retry_after(throttle.SHARE_IP, ip)
                if wait:
                    return too_many_attempts(request, wait, "Too many invalid share links.")
                try:
                    scope = share_scope(token)
                except access.NotVisible:
                    throttle.record_failure(throttle.SHARE_IP, ip)
                    raise
                if not access.has_role(scope.role, need):
                    raise access.NotAllowed()
            else:
                scope = project_scope(request, kwargs.pop("ws"), kwargs.pop("project"), need)
            return func(request, scope, *args, **kwargs)

        return wrapper

    return deco


def scope_run(scope: Scope, run_id: Any) -> Run:
    """A run of the scope's project that the scope's principal may see (else not found)."""
    run = access.get_run(scope.principal, run_id)
    if run.project_id != scope.project.pk:
        raise access.NotVisible()
    return run


def scope_runs(scope: Scope, raw: list[str]) -> list[Run]:
    """Run ids given as `runs=1,2` or `runs=1&runs=2`; every one must be visible here."""
    ids: list[str] = []
    for item in raw:
        ids.extend(x for x in item.split(",") if x.strip())
    if not ids:
        return []
    runs = access.get_runs(scope.principal, ids[:50])
    if any(r.project_id != scope.project.pk for r in runs):
        raise access.NotVisible()
    # Keep the order of the URL: it decides the runs' colours on the compare page.
    order = {int(x): i for i, x in reversed(list(enumerate(ids[:50])))}
    return sorted(runs, key=lambda r: order.get(r.pk, 0))
