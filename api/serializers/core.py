"""Serializers for workspaces, members, projects, runs, tokens and share links."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from tracker.models import (
    ApiToken,
    Membership,
    Project,
    ProjectMembership,
    Role,
    Run,
    RunStatus,
    Visibility,
    Workspace,
)
from tracker.models.workspaces import SLUG_RE


def run_url(run: Run) -> str:
    p = run.project
    return f"{settings.TRACKER_PUBLIC_URL}/{p.workspace.slug}/{p.slug}/runs/{run.pk}"


def project_url(project: Project) -> str:
    return f"{settings.TRACKER_PUBLIC_URL}/{project.workspace.slug}/{project.slug}"


class SlugField(serializers.RegexField):
    def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(SLUG_RE, max_length=64, **kwargs)
        self.error_messages["invalid"] = "Use 1-64 lowercase letters, digits and inner hyphens."


# --- workspaces ------------------------------------------------------------------------------
class WorkspaceIn(serializers.Serializer):
    slug = SlugField()
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class WorkspaceUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class WorkspaceOut(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    role = serializers.SerializerMethodField()

    def get_role(self, obj: Workspace) -> str | None:
        roles = self.context.get("roles") or {}
        return roles.get(obj.pk)


class MemberIn(serializers.Serializer):
    user = serializers.CharField(max_length=254, help_text="username or email")
    role = serializers.ChoiceField(choices=Role.choices)


class RoleIn(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberOut(serializers.Serializer):
    user_id = serializers.IntegerField(source="user.id")
    username = serializers.CharField(source="user.username")
    email = serializers.SerializerMethodField()
    role = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_email(self, obj: Membership | ProjectMembership) -> str:
        return obj.user.email if self.context.get("show_email") else ""


# --- projects ---------------------------------------------------------------------------------
class ProjectIn(serializers.Serializer):
    slug = SlugField()
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(max_length=10000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)


class ProjectUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=10000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)


class ProjectOut(serializers.Serializer):
    id = serializers.IntegerField()
    workspace = serializers.CharField(source="workspace.slug")
    slug = serializers.CharField()
    full_slug = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    visibility = serializers.CharField()
    created_at = serializers.DateTimeField()
    url = serializers.SerializerMethodField()

    def get_url(self, obj: Project) -> str:
        return project_url(obj)


# --- runs -------------------------------------------------------------------------------------
class RunIn(serializers.Serializer):
    name = serializers.CharField(max_length=255, required=False, allow_blank=True)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=100, required=False
    )
    notes = serializers.CharField(max_length=100000, required=False, allow_blank=True)
    params = serializers.DictField(required=False)


class RunUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=255, required=False)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), max_length=100, required=False
    )
    notes = serializers.CharField(max_length=100000, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)


class RunOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    project = serializers.CharField(source="project.full_slug")
    status = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    notes = serializers.CharField()
    created_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    source = serializers.CharField()
    source_path = serializers.CharField()
    url = serializers.SerializerMethodField()

    def get_created_by(self, obj: Run) -> str | None:
        return obj.created_by.username if obj.created_by_id and obj.created_by else None

    def get_url(self, obj: Run) -> str:
        return run_url(obj)


class RunDetailOut(RunOut):
    params = serializers.SerializerMethodField()

    def get_params(self, obj: Run) -> dict:
        return {p.key: p.value for p in obj.params.all().order_by("key")}


class ParamsIn(serializers.Serializer):
    params = serializers.DictField()


# --- tokens and share links ----------------------------------------------------------------------
class TokenIn(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    workspace = serializers.CharField(
        max_length=64, required=False, help_text="restrict to this workspace slug"
    )
    role = serializers.ChoiceField(choices=Role.choices, required=False, help_text="maximum role")
    service_account = serializers.BooleanField(default=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class TokenOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    workspace = serializers.SerializerMethodField()
    role = serializers.CharField(allow_null=True)
    service_account = serializers.BooleanField(source="is_service_account")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)

    def get_workspace(self, obj: ApiToken) -> str | None:
        return obj.workspace.slug if obj.workspace_id else None


class ShareLinkIn(serializers.Serializer):
    run = serializers.IntegerField(
        required=False, allow_null=True, help_text="limit the link to one run"
    )
    label = serializers.CharField(max_length=200, required=False, allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ShareLinkOut(serializers.Serializer):
    id = serializers.IntegerField()
    project = serializers.CharField(source="project.full_slug")
    run = serializers.IntegerField(source="run_id", allow_null=True)
    prefix = serializers.CharField()
    label = serializers.CharField()
    role = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    use_count = serializers.IntegerField()
    active = serializers.BooleanField(source="is_active")


class MeOut(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    username = serializers.CharField()
    email = serializers.CharField()
    service_account = serializers.BooleanField()
    workspaces = serializers.ListField(child=serializers.DictField())
