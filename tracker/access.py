"""Who may do what: the one place that resolves objects for a principal.

Every API and web view gets workspaces, projects and runs through these functions. An
object the principal may not see raises `NotVisible` (answered 404, the same as a missing
object, so ids and slugs of other tenants leak nothing); a visible object that needs a higher
role raises `NotAllowed` (403).

Roles: viewer < contributor < owner. A principal's role on a project is the highest of its
workspace membership, its project membership and "viewer" for public projects, then narrowed
by the token it authenticated with (a token restricted to a workspace or a role). A share
link grants viewer on its project (or on its one run) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import Q, QuerySet, Value

from .models import (
    ROLE_RANK,
    ApiToken,
    IngestJob,
    Membership,
    Project,
    ProjectMembership,
    Role,
    Run,
    ShareLink,
    Visibility,
    Workspace,
    max_role,
    min_role,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


class AccessError(Exception):
    pass


class NotVisible(AccessError):
    """The object does not exist for this principal (404)."""


class NotAllowed(AccessError):
    """The object is visible but the principal's role is too low (403)."""

    def __init__(self, message: str = "You do not have permission to do this.") -> None:
        super().__init__(message)
        self.message = message


VIEWER, CONTRIBUTOR, OWNER = Role.VIEWER.value, Role.CONTRIBUTOR.value, Role.OWNER.value


@dataclass
class Principal:
    """The caller: a user (session or personal token), a service-account token, a share link."""

    user: AbstractBaseUser | None = None
    token: ApiToken | None = None
    share_link: ShareLink | None = None
    _ws_roles: dict[int, str] | None = field(default=None, repr=False)
    _project_roles: dict[int, str] | None = field(default=None, repr=False)

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None or (self.token is not None and self.token.is_service_account)

    @property
    def acting_user(self) -> AbstractBaseUser | None:
        """The user recorded as author of writes (None for service accounts and share links)."""
        return self.user

    @property
    def label(self) -> str:
        if self.user is not None:
            return str(self.user.get_username())
        if self.token is not None:
            return f"service:{self.token.name}"
        return "anonymous"

    # Membership lookups are loaded once per request, both kinds in one query: members have
    # few workspaces and fewer project grants, and every request that touches a run asks.
    def workspace_roles(self) -> dict[int, str]:
        if self._ws_roles is None:
            self._load_roles()
        return self._ws_roles  # type: ignore[return-value]

    def project_roles(self) -> dict[int, str]:
        if self._project_roles is None:
            self._load_roles()
        return self._project_roles  # type: ignore[return-value]

    def _load_roles(self) -> None:
        self._ws_roles, self._project_roles = {}, {}
        if self.token is not None and self.token.is_service_account:
            if self.token.workspace_id and self.token.role:
                self._ws_roles[self.token.workspace_id] = self.token.role
        elif self.user is not None:
            grants = Membership.objects.filter(user=self.user).values_list(
                Value(True), "workspace_id", "role"
            )
            grants = grants.union(
                ProjectMembership.objects.filter(user=self.user).values_list(
                    Value(False), "project_id", "role"
                ),
                all=True,
            )
            for is_workspace, pk, role in grants:
                (self._ws_roles if is_workspace else self._project_roles)[pk] = role

    def _narrow(self, workspace_id: int, role: str | None) -> str | None:
        """Apply the limits of a personal token (workspace and maximum role)."""
        token = self.token
        if role is None or token is None or token.is_service_account:
            return role
        if token.workspace_id is not None and token.workspace_id != workspace_id:
            return None
        return min_role(role, token.role) if token.role else role


ANONYMOUS = Principal()


def has_role(role: str | None, need: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[need]


# --- roles -------------------------------------------------------------------------------


def workspace_role(principal: Principal, workspace: Workspace) -> str | None:
    role = principal.workspace_roles().get(workspace.pk)
    return principal._narrow(workspace.pk, role)


def project_role(principal: Principal, project: Project) -> str | None:
    """The principal's role on the whole project (a run-scoped share link gives none)."""
    role = max_role(
        principal.workspace_roles().get(project.workspace_id),
        principal.project_roles().get(project.pk),
    )
    role = principal._narrow(project.workspace_id, role)
    if project.visibility == Visibility.PUBLIC:
        role = max_role(role, VIEWER)
    link = principal.share_link
    if link is not None and link.project_id == project.pk and link.run_id is None:
        role = max_role(role, VIEWER)
    return role


def run_role(principal: Principal, run: Run) -> str | None:
    role = project_role(principal, run.project)
    link = principal.share_link
    if link is not None and link.run_id == run.pk:
        role = max_role(role, VIEWER)
    return role


def _check(role: str | None, need: str) -> None:
    if role is None:
        raise NotVisible()
    if not has_role(role, need):
        raise NotAllowed(f"This needs the {need} role; you have {role}.")


# --- workspaces ------------------------------------------------------------------------------


def visible_workspaces(principal: Principal) -> QuerySet[Workspace]:
    ids = set(principal.workspace_roles())
    token = principal.token
    if token is not None and not token.is_service_account and token.workspace_id:
        ids &= {token.workspace_id}
    return Workspace.objects.filter(pk__in=ids).order_by("slug")


def get_workspace(principal: Principal, slug: str, need: str = VIEWER) -> Workspace:
    """Workspaces are visible to their members only; guests see projects, not workspaces."""
    try:
        workspace = Workspace.objects.get(slug=slug)
    except (Workspace.DoesNotExist, ValueError):
        raise NotVisible() from None
    _check(workspace_role(principal, workspace), need)
    return workspace


# --- projects --------------------------------------------------------------------------------


def visible_projects(principal: Principal, workspace: Workspace | None = None) -> QuerySet[Project]:
    """Projects this principal can read: member workspaces, project grants, public, share link."""
    ws_ids = list(principal.workspace_roles())
    cond = Q(workspace_id__in=ws_ids) | Q(pk__in=list(principal.project_roles()))
    token = principal.token
    if token is not None and not token.is_service_account and token.workspace_id:
        cond &= Q(workspace_id=token.workspace_id)
    cond |= Q(visibility=Visibility.PUBLIC)
    link = principal.share_link
    if link is not None and link.run_id is None:
        cond |= Q(pk=link.project_id)
    qs = Project.objects.filter(cond).select_related("workspace")
    if workspace is not None:
        qs = qs.filter(workspace=workspace)
    return qs.order_by("workspace__slug", "slug")


def get_project(
    principal: Principal, workspace_slug: str, project_slug: str, need: str = VIEWER
) -> Project:
    try:
        project = Project.objects.select_related("workspace").get(
            workspace__slug=workspace_slug, slug=project_slug
        )
    except (Project.DoesNotExist, ValueError):
        raise NotVisible() from None
    role = project_role(principal, project)
    link = principal.share_link
    if role is None and link is not None and link.run_id and link.project_id == project.pk:
        # A run-scoped link may open its project page, which then lists that run only.
        role = VIEWER
    _check(role, need)
    return project


def get_project_by_id(principal: Principal, project_id: Any, need: str = VIEWER) -> Project:
    """For ids that arrive inside request bodies: other tenants' ids look missing."""
    try:
        project = Project.objects.select_related("workspace").get(pk=int(project_id))
    except (Project.DoesNotExist, ValueError, TypeError):
        raise NotVisible() from None
    _check(project_role(principal, project), need)
    return project


# --- runs ------------------------------------------------------------------------------------


def visible_runs(principal: Principal, project: Project) -> QuerySet[Run]:
    """Runs of a project already resolved with get_project."""
    qs = Run.objects.filter(project=project)
    link = principal.share_link
    if (
        link is not None
        and link.run_id is not None
        and link.project_id == project.pk
        and project_role(principal, project) is None
    ):
        qs = qs.filter(pk=link.run_id)
    return qs


def get_run(principal: Principal, run_id: Any, need: str = VIEWER) -> Run:
    try:
        run = Run.objects.select_related("project__workspace").get(pk=int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError, OverflowError):
        raise NotVisible() from None
    _check(run_role(principal, run), need)
    return run


def get_runs(principal: Principal, run_ids: Iterable[Any], need: str = VIEWER) -> list[Run]:
    """Resolve several runs at once (compare views); any invisible id fails the whole call."""
    try:
        ids = sorted({int(r) for r in run_ids})
    except (ValueError, TypeError):
        raise NotVisible() from None
    runs = list(Run.objects.select_related("project__workspace").filter(pk__in=ids))
    if len(runs) != len(ids):
        raise NotVisible()
    for run in runs:
        _check(run_role(principal, run), need)
    return runs


# --- jobs --------------------------------------------------------------------------------------


def get_job(principal: Principal, job_id: Any, need: str = VIEWER) -> IngestJob:
    """An ingest/export job, visible with its project (viewer reads, contributor writes)."""
    try:
        job = IngestJob.objects.select_related("project__workspace").get(pk=int(job_id))
    except (IngestJob.DoesNotExist, ValueError, TypeError, OverflowError):
        raise NotVisible() from None
    _check(project_role(principal, job.project), need)
    return job
