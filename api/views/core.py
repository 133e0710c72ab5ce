"""Workspaces, members, projects, runs, params, tokens and share links."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from tracker import access
from tracker.access import CONTRIBUTOR, OWNER, VIEWER
from tracker.models import (
    ApiToken,
    Membership,
    Param,
    ProjectMembership,
    Role,
    ShareLink,
    Workspace,
)
from tracker.services import idempotency, sharing, workspaces
from tracker.services import runs as run_services

from ..serializers import core as s
from .base import TrackerView


def _run_queryset(qs):  # type: ignore[no-untyped-def]
    return qs.select_related("project__workspace", "created_by")


class MeView(TrackerView):
    @extend_schema(responses=s.MeOut)
    def get(self, request):  # type: ignore[no-untyped-def]
        p = self.require_login()
        roles = p.workspace_roles()
        slugs = dict(Workspace.objects.filter(pk__in=roles).values_list("pk", "slug"))
        return Response(
            {
                "id": p.user.pk if p.user else None,
                "username": p.label,
                "email": p.user.email if p.user else "",
                "service_account": p.user is None,
                "workspaces": [
                    {"slug": slugs[w], "role": r} for w, r in roles.items() if w in slugs
                ],
            }
        )


class WorkspaceListView(TrackerView):
    @extend_schema(responses=s.WorkspaceOut(many=True))
    def get(self, request):  # type: ignore[no-untyped-def]
        p = self.require_login()
        return self.page(access.visible_workspaces(p), s.WorkspaceOut, roles=p.workspace_roles())

    @extend_schema(request=s.WorkspaceIn, responses={201: s.WorkspaceOut})
    def post(self, request):  # type: ignore[no-untyped-def]
        p = self.require_user()
        data = self.validated(s.WorkspaceIn)
        ws = workspaces.create_workspace(user=p.user, slug=data["slug"], name=data.get("name", ""))
        return Response(s.WorkspaceOut(ws, context={"roles": {ws.pk: Role.OWNER}}).data, status=201)


class WorkspaceDetailView(TrackerView):
    @extend_schema(responses=s.WorkspaceOut)
    def get(self, request, ws):  # type: ignore[no-untyped-def]
        workspace = access.get_workspace(self.principal, ws)
        return Response(
            s.WorkspaceOut(workspace, context={"roles": self.principal.workspace_roles()}).data
        )

    @extend_schema(request=s.WorkspaceUpdateIn, responses=s.WorkspaceOut)
    def patch(self, request, ws):  # type: ignore[no-untyped-def]
        workspace = access.get_workspace(self.principal, ws, OWNER)
        data = self.validated(s.WorkspaceUpdateIn)
        workspace.name = data["name"]
        workspace.save(update_fields=["name"])
        return Response(
            s.WorkspaceOut(workspace, context={"roles": self.principal.workspace_roles()}).data
        )

    @extend_schema(responses={204: None})
    def delete(self, request, ws):  # type: ignore[no-untyped-def]
        workspace = access.get_workspace(self.principal, ws, OWNER)
        workspace.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(TrackerView):
    @extend_schema(responses=s.MemberOut(many=True))
    def get(self, request, ws):  # type: ignore[no-untyped-def]
        p = self.principal
        workspace = access.get_workspace(p, ws)
        qs = Membership.objects.filter(workspace=workspace).select_related("user")
        show_email = access.has_role(access.workspace_role(p, workspace), OWNER)
        return self.page(qs, s.MemberOut, show_email=show_email)

    @extend_schema(request=s.MemberIn, responses={201: s.MemberOut})
    def post(self, request, ws):  # type: ignore[no-untyped-def]
        workspace = access.get_workspace(self.principal, ws, OWNER)
        data = self.validated(s.MemberIn)
        m = workspaces.add_member(workspace=workspace, identifier=data["user"], role=data["role"])
        return Response(s.MemberOut(m, context={"show_email": True}).data, status=201)


class MemberDetailView(TrackerView):
    def _membership(self, ws: str, user_id: int, need: str) -> Membership:
        workspace = access.get_workspace(self.principal, ws, need)
        m = (
            Membership.objects.select_related("user", "workspace")
            .filter(workspace=workspace, user_id=user_id)
            .first()
        )
        if m is None:
            raise access.NotVisible()
        return m

    @extend_schema(responses=s.MemberOut)
    def get(self, request, ws, user_id):  # type: ignore[no-untyped-def]
        return Response(s.MemberOut(self._membership(ws, user_id, VIEWER)).data)

    @extend_schema(request=s.RoleIn, responses=s.MemberOut)
    def patch(self, request, ws, user_id):  # type: ignore[no-untyped-def]
        m = self._membership(ws, user_id, OWNER)
        data = self.validated(s.RoleIn)
        workspaces.change_role(membership=m, role=data["role"])
        return Response(s.MemberOut(m, context={"show_email": True}).data)

    @extend_schema(responses={204: None})
    def delete(self, request, ws, user_id):  # type: ignore[no-untyped-def]
        m = self._membership(ws, user_id, OWNER)
        workspaces.remove_member(membership=m)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectListView(TrackerView):
    @extend_schema(responses=s.ProjectOut(many=True))
    def get(self, request, ws):  # type: ignore[no-untyped-def]
        p = self.principal
        workspace = access.get_workspace(p, ws)
        return self.page(access.visible_projects(p, workspace), s.ProjectOut)

    @extend_schema(request=s.ProjectIn, responses={201: s.ProjectOut})
    def post(self, request, ws):  # type: ignore[no-untyped-def]
        p = self.principal
        workspace = access.get_workspace(p, ws, CONTRIBUTOR)
        data = self.validated(s.ProjectIn)
        project = workspaces.create_project(workspace=workspace, user=p.acting_user, **data)
        return Response(s.ProjectOut(project).data, status=201)


class ProjectDetailView(TrackerView):
    @extend_schema(responses=s.ProjectOut)
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        return Response(s.ProjectOut(access.get_project(self.principal, ws, project)).data)

    @extend_schema(request=s.ProjectUpdateIn, responses=s.ProjectOut)
    def patch(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project, OWNER)
        data = self.validated(s.ProjectUpdateIn)
        return Response(s.ProjectOut(workspaces.update_project(project=proj, **data)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, ws, project):  # type: ignore[no-untyped-def]
        access.get_project(self.principal, ws, project, OWNER).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectMemberListView(TrackerView):
    @extend_schema(responses=s.MemberOut(many=True))
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project, CONTRIBUTOR)
        return self.page(
            ProjectMembership.objects.filter(project=proj).select_related("user"), s.MemberOut
        )

    @extend_schema(request=s.MemberIn, responses={201: s.MemberOut})
    def post(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project, OWNER)
        data = self.validated(s.MemberIn)
        pm = workspaces.set_project_member(project=proj, identifier=data["user"], role=data["role"])
        return Response(s.MemberOut(pm).data, status=201)


class ProjectMemberDetailView(TrackerView):
    @extend_schema(responses={204: None})
    def delete(self, request, ws, project, user_id):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project, OWNER)
        deleted, _ = ProjectMembership.objects.filter(project=proj, user_id=user_id).delete()
        if not deleted:
            raise access.NotVisible()
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunListView(TrackerView):
    @extend_schema(responses=s.RunOut(many=True))
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project)
        return self.page(_run_queryset(access.visible_runs(self.principal, proj)), s.RunOut)

    @extend_schema(request=s.RunIn, responses={201: s.RunDetailOut})
    def post(self, request, ws, project):  # type: ignore[no-untyped-def]
        p = self.principal
        proj = access.get_project(p, ws, project, CONTRIBUTOR)
        data = self.validated(s.RunIn)

        def work():  # type: ignore[no-untyped-def]
            run = run_services.create_run(project=proj, user=p.acting_user, **data)
            return 201, s.RunDetailOut(run).data

        # The client retries a create whose response was lost with the same key: one run.
        code, body, _ = idempotency.run_once(
            f"project:{proj.pk}:runs", request.headers.get("Idempotency-Key"), work
        )
        return Response(body, status=code)


class RunDetailView(TrackerView):
    @extend_schema(responses=s.RunDetailOut)
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        return Response(s.RunDetailOut(run).data)

    @extend_schema(request=s.RunUpdateIn, responses=s.RunDetailOut)
    def patch(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)
        data = self.validated(s.RunUpdateIn)
        run_services.update_run(run, **data)
        return Response(s.RunDetailOut(run).data)

    @extend_schema(responses={204: None})
    def delete(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)
        run_services.delete_run(run)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunParamsView(TrackerView):
    @extend_schema(responses=OpenApiResponse(description='{"params": {...}}'))
    def get(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id)
        return Response(
            {
                "params": dict(
                    Param.objects.filter(run=run).order_by("key").values_list("key", "value")
                )
            }
        )

    @extend_schema(request=s.ParamsIn, responses=OpenApiResponse(description='{"params": {...}}'))
    def post(self, request, run_id):  # type: ignore[no-untyped-def]
        run = access.get_run(self.principal, run_id, CONTRIBUTOR)
        data = self.validated(s.ParamsIn)
        run_services.set_params(run, data["params"])
        return Response(
            {
                "params": dict(
                    Param.objects.filter(run=run).order_by("key").values_list("key", "value")
                )
            }
        )


class TokenListView(TrackerView):
    @extend_schema(responses=s.TokenOut(many=True))
    def get(self, request):  # type: ignore[no-untyped-def]
        p = self.require_user()
        return self.page(
            ApiToken.objects.filter(created_by=p.user).select_related("workspace"), s.TokenOut
        )

    @extend_schema(request=s.TokenIn, responses={201: s.TokenOut})
    def post(self, request):  # type: ignore[no-untyped-def]
        p = self.require_user()
        if p.token is not None:
            # A token cannot mint tokens: a leaked token must not be able to outlive revocation.
            raise access.NotAllowed("Create tokens from the web UI: a token cannot mint tokens.")
        data = self.validated(s.TokenIn)
        workspace = None
        if data.get("workspace"):
            need = OWNER if data.get("service_account") else VIEWER
            workspace = access.get_workspace(p, data["workspace"], need)
        token, secret = sharing.create_token(
            user=p.user,
            name=data["name"],
            workspace=workspace,
            role=data.get("role"),
            service_account=data.get("service_account", False),
            expires_at=data.get("expires_at"),
        )
        body = dict(s.TokenOut(token).data)
        body["token"] = secret  # shown once, never stored
        return Response(body, status=201)


class TokenDetailView(TrackerView):
    @extend_schema(responses={204: None})
    def delete(self, request, token_id):  # type: ignore[no-untyped-def]
        p = self.require_user()
        token = ApiToken.objects.filter(pk=token_id, created_by=p.user).first()
        if token is None:
            raise access.NotVisible()
        sharing.revoke_token(token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ShareLinkListView(TrackerView):
    @extend_schema(responses=s.ShareLinkOut(many=True))
    def get(self, request, ws, project):  # type: ignore[no-untyped-def]
        proj = access.get_project(self.principal, ws, project, OWNER)
        qs = ShareLink.objects.filter(project=proj).select_related("project__workspace")
        return self.page(qs, s.ShareLinkOut)

    @extend_schema(request=s.ShareLinkIn, responses={201: s.ShareLinkOut})
    def post(self, request, ws, project):  # type: ignore[no-untyped-def]
        p = self.principal
        proj = access.get_project(p, ws, project, OWNER)
        data = self.validated(s.ShareLinkIn)
        run = None
        if data.get("run") is not None:
            run = access.get_run(p, data["run"])
            if run.project_id != proj.pk:
                raise access.NotVisible()
        link, secret = sharing.create_share_link(
            project=proj,
            user=p.acting_user,
            run=run,
            label=data.get("label", ""),
            expires_at=data.get("expires_at"),
        )
        body = dict(s.ShareLinkOut(link).data)
        body["token"] = secret
        body["url"] = f"{settings.TRACKER_PUBLIC_URL}/s/{secret}/"
        return Response(body, status=201)


class ShareLinkDetailView(TrackerView):
    def _link(self, link_id: int) -> ShareLink:
        link = ShareLink.objects.select_related("project__workspace").filter(pk=link_id).first()
        if link is None:
            raise access.NotVisible()
        p = self.principal
        # Resolve through the project so that a link of an invisible project is a 404.
        access.get_project(p, link.project.workspace.slug, link.project.slug, OWNER)
        return link

    @extend_schema(responses=s.ShareLinkOut)
    def get(self, request, link_id):  # type: ignore[no-untyped-def]
        return Response(s.ShareLinkOut(self._link(link_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, link_id):  # type: ignore[no-untyped-def]
        sharing.revoke_share_link(self._link(link_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


_ = Prefetch  # re-exported for area modules that prefetch
