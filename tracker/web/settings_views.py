"""Project settings (owners only): workspace members, share links, visibility.

Every change goes through the services; the page answers each POST by rendering itself
with the outcome, so a fresh share-link secret is shown exactly once and never stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from .. import access
from ..models import Membership, Role, ShareLink, Visibility
from ..services import sharing as sharing_svc
from ..services import workspaces as ws_svc
from ..services.errors import ServiceError
from .common import Scope, int_or
from .scoping import scope_run, scoped


def _expiry(days: str | None) -> Any:
    n = int_or(days, 0)
    return timezone.now() + timedelta(days=n) if n > 0 else None


def _handle(request: HttpRequest, scope: Scope, ws_owner: bool) -> dict[str, Any]:
    action = request.POST.get("action", "")
    project = scope.project
    user = scope.principal.user
    if action == "visibility":
        vis = request.POST.get("visibility", "")
        if vis not in Visibility.values:
            raise ServiceError("Choose private or public.", field="visibility")
        ws_svc.update_project(project=project, visibility=vis)
        return {"notice": f"The project is now {vis}."}
    if action == "create_link":
        run = None
        if request.POST.get("run"):
            run = scope_run(scope, request.POST["run"])
        link, secret = sharing_svc.create_share_link(
            project=project,
            user=user,
            run=run,
            label=request.POST.get("label", ""),
            expires_at=_expiry(request.POST.get("expires_days")),
        )
        return {
            "new_link": link,
            "new_link_url": request.build_absolute_uri(f"/s/{secret}/"),
            "notice": "Share link created. Copy it now: it will not be shown again.",
        }
    if action == "revoke_link":
        link = ShareLink.objects.filter(
            pk=int_or(request.POST.get("link"), 0), project=project
        ).first()
        if link is None:
            raise access.NotVisible()
        sharing_svc.revoke_share_link(link)
        return {"notice": "Share link revoked."}
    if action in ("invite", "change_role", "remove"):
        if not ws_owner:
            raise access.NotAllowed("Only workspace owners manage members.")
        workspace = project.workspace
        if action == "invite":
            m = ws_svc.add_member(
                workspace=workspace,
                identifier=request.POST.get("identifier", ""),
                role=request.POST.get("role", Role.VIEWER),
            )
            return {"notice": f"{m.user.username} joined as {m.role}."}
        membership = (
            Membership.objects.select_related("user", "workspace")
            .filter(pk=int_or(request.POST.get("membership"), 0), workspace=workspace)
            .first()
        )
        if membership is None:
            raise access.NotVisible()
        if action == "change_role":
            ws_svc.change_role(membership=membership, role=request.POST.get("role", ""))
            return {"notice": f"{membership.user.username} is now {membership.role}."}
        ws_svc.remove_member(membership=membership)
        return {"notice": f"{membership.user.username} was removed."}
    raise ServiceError("Unknown action.")


@scoped(need=access.OWNER, share_ok=False)
def settings_page(request: HttpRequest, scope: Scope) -> HttpResponse:
    project = scope.project
    ws_owner = access.has_role(
        access.workspace_role(scope.principal, project.workspace), access.OWNER
    )
    ctx: dict[str, Any] = {"scope": scope, "project": project, "ws_owner": ws_owner}
    status = 200
    if request.method == "POST":
        try:
            ctx.update(_handle(request, scope, ws_owner))
        except ServiceError as exc:
            ctx["form_error"] = exc.message
            status = 400
        project.refresh_from_db()
    ctx["members"] = (
        Membership.objects.filter(workspace=project.workspace)
        .select_related("user")
        .order_by("user__username")
    )
    ctx["links"] = (
        ShareLink.objects.filter(project=project)
        .select_related("run", "created_by")
        .order_by("-created_at")
    )
    ctx["roles"] = Role.choices
    ctx["now"] = timezone.now()
    return render(request, "web/settings.html", ctx, status=status)
