"""Workspaces, their members and roles."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

SLUG_RE = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_RE, "Use 1-64 lowercase letters, digits and inner hyphens.", code="invalid_slug"
)


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    CONTRIBUTOR = "contributor", "Contributor"
    OWNER = "owner", "Owner"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.value]


ROLE_RANK: dict[str, int] = {Role.VIEWER: 1, Role.CONTRIBUTOR: 2, Role.OWNER: 3}


def max_role(*roles: str | None) -> str | None:
    present = [r for r in roles if r]
    return max(present, key=ROLE_RANK.__getitem__) if present else None


def min_role(*roles: str | None) -> str | None:
    present = [r for r in roles if r]
    return min(present, key=ROLE_RANK.__getitem__) if present else None


class Workspace(models.Model):
    slug = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="uniq_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.workspace_id}:{self.role}"
