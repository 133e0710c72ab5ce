"""Workspaces, projects and their members."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from ..models import Membership, Project, ProjectMembership, Role, Visibility, Workspace
from .errors import Conflict, ServiceError

User = get_user_model()


def create_workspace(*, user, slug: str, name: str = "") -> Workspace:  # type: ignore[no-untyped-def]
    try:
        with transaction.atomic():
            ws = Workspace.objects.create(slug=slug, name=name or slug, created_by=user)
            Membership.objects.create(workspace=ws, user=user, role=Role.OWNER)
    except IntegrityError:
        raise Conflict("A workspace with this slug already exists.", field="slug") from None
    return ws


def find_user(identifier: str):  # type: ignore[no-untyped-def]
    ident = (identifier or "").strip()
    if not ident:
        raise ServiceError("Give a username or an email address.", field="user")
    user = User.objects.filter(Q(username=ident) | Q(email__iexact=ident), is_active=True).first()
    if user is None:
        raise ServiceError(
            "No active user with that username or email.", field="user", code="unknown_user"
        )
    return user


def add_member(*, workspace: Workspace, identifier: str, role: str) -> Membership:
    user = find_user(identifier)
    if role not in Role.values:
        raise ServiceError("Unknown role.", field="role")
    membership, created = Membership.objects.get_or_create(
        workspace=workspace, user=user, defaults={"role": role}
    )
    if not created:
        raise Conflict("That user is already a member.", field="user")
    return membership


def _owner_count(workspace: Workspace) -> int:
    return Membership.objects.filter(workspace=workspace, role=Role.OWNER).count()


def change_role(*, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ServiceError("Unknown role.", field="role")
    with transaction.atomic():
        Membership.objects.select_for_update().filter(
            workspace=membership.workspace_id, role=Role.OWNER
        ).exists()
        if (
            membership.role == Role.OWNER
            and role != Role.OWNER
            and _owner_count(membership.workspace) <= 1
        ):
            raise Conflict("The last owner cannot be demoted.", field="role", code="last_owner")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def remove_member(*, membership: Membership) -> None:
    with transaction.atomic():
        list(Membership.objects.select_for_update().filter(workspace=membership.workspace_id))
        if membership.role == Role.OWNER and _owner_count(membership.workspace) <= 1:
            raise Conflict("The last owner cannot be removed.", code="last_owner")
        ProjectMembership.objects.filter(
            project__workspace=membership.workspace_id, user=membership.user_id
        ).delete()
        membership.delete()


def create_project(
    *,
    workspace: Workspace,
    user,
    slug: str,
    name: str = "",
    description: str = "",
    visibility: str = Visibility.PRIVATE,
) -> Project:  # type: ignore[no-untyped-def]
    try:
        with transaction.atomic():
            return Project.objects.create(
                workspace=workspace,
                slug=slug,
                name=name or slug,
                description=description,
                visibility=visibility,
                created_by=user,
            )
    except IntegrityError:
        raise Conflict(
            "A project with this slug already exists in the workspace.", field="slug"
        ) from None


def update_project(*, project: Project, **fields: object) -> Project:
    for name in ("name", "description", "visibility"):
        if name in fields:
            setattr(project, name, fields[name])
    project.save()
    return project


def set_project_member(*, project: Project, identifier: str, role: str) -> ProjectMembership:
    user = find_user(identifier)
    if role not in Role.values:
        raise ServiceError("Unknown role.", field="role")
    pm, _ = ProjectMembership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return pm
