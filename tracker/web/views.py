"""Small views (login, health) and re-exports; pages live in pages/runs/settings/tokens."""

from __future__ import annotations

import math

from django.contrib.auth import views as auth_views
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from ..services import throttle
from .common import web_principal

__all__ = ["LoginView", "healthz", "web_principal"]


def too_many_attempts(request: HttpRequest, wait: int, message: str) -> HttpResponse:
    """429 page with Retry-After: the guesser is told to wait, a person is told for how long."""
    response = render(
        request,
        "web/429.html",
        {"message": message, "minutes": max(1, math.ceil(wait / 60))},
        status=429,
    )
    response["Retry-After"] = str(wait)
    return response


class LoginView(auth_views.LoginView):
    """Django's login, throttled per username and per address after repeated failures."""

    template_name = "web/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:  # type: ignore[no-untyped-def]
        username = str(request.POST.get("username", ""))[:150]
        ip = throttle.client_ip(request)
        # Checked before the password is: a blocked key gets no answer about the password.
        wait = max(
            throttle.retry_after(throttle.LOGIN_USER, username),
            throttle.retry_after(throttle.LOGIN_IP, ip),
        )
        if wait:
            return too_many_attempts(
                request, wait, "Too many failed log-in attempts for this account or address."
            )
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):  # type: ignore[no-untyped-def]
        username = str(self.request.POST.get("username", ""))[:150]
        throttle.record_failure(throttle.LOGIN_USER, username)
        throttle.record_failure(throttle.LOGIN_IP, throttle.client_ip(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):  # type: ignore[no-untyped-def]
        throttle.reset(throttle.LOGIN_USER, form.get_user().get_username())
        return super().form_valid(form)


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    return JsonResponse({"ok": True})
