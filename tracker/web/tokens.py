"""Personal API tokens: create (secret shown once), list, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from .. import access
from ..models import ApiToken, Role
from ..services.errors import ServiceError
from ..services.sharing import create_token, revoke_token
from .common import int_or, web_principal, web_view


@login_required
@web_view
def tokens_page(request: HttpRequest) -> HttpResponse:
    p = web_principal(request)
    ctx: dict[str, Any] = {}
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "create":
                workspace = None
                if request.POST.get("workspace"):
                    workspace = access.get_workspace(p, request.POST["workspace"])
                role = request.POST.get("role") or None
                days = int_or(request.POST.get("expires_days"), 0)
                token, secret = create_token(
                    user=request.user,
                    name=request.POST.get("name", "").strip(),
                    workspace=workspace,
                    role=role,
                    expires_at=timezone.now() + timedelta(days=days) if days > 0 else None,
                )
                ctx.update(new_token=token, new_secret=secret)
            elif action == "revoke":
                token = ApiToken.objects.filter(
                    pk=int_or(request.POST.get("token"), 0), user=request.user
                ).first()
                if token is None:
                    raise access.NotVisible()
                revoke_token(token)
                ctx["notice"] = f"Token {token.name} revoked."
            else:
                raise ServiceError("Unknown action.")
        except ServiceError as exc:
            ctx["form_error"] = exc.message
            status = 400
    ctx["tokens"] = (
        ApiToken.objects.filter(user=request.user)
        .select_related("workspace")
        .order_by("-created_at")
    )
    ctx["workspaces"] = access.visible_workspaces(p)
    ctx["roles"] = Role.choices
    ctx["now"] = timezone.now()
    return render(request, "web/tokens.html", ctx, status=status)
