"""Projects and per-project role grants."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .workspaces import Role, Workspace, slug_validator


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private"
    PUBLIC = "public", "Public"


class Project(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="projects")
    slug = models.CharField(max_length=64, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "slug"], name="uniq_project_slug")
        ]

    def __str__(self) -> str:
        return self.full_slug

    @property
    def full_slug(self) -> str:
        return f"{self.workspace.slug}/{self.slug}"

    @property
    def is_public(self) -> bool:
        return self.visibility == Visibility.PUBLIC


class ProjectMembership(models.Model):
    """Raises a user's role on one project (or grants a guest access to just this project)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="uniq_project_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} on project {self.project_id}"
