"""Share links and API tokens: secrets are generated here, shown once and stored hashed."""

from __future__ import annotations

import secrets
from datetime import datetime

from django.utils import timezone

from ..models import ApiToken, Project, Role, Run, ShareLink, Workspace, digest
from .errors import ServiceError

TOKEN_PREFIX = "trk_"
SHARE_PREFIX = "shr_"


def create_token(
    *,
    user,  # type: ignore[no-untyped-def]
    name: str,
    workspace: Workspace | None = None,
    role: str | None = None,
    service_account: bool = False,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Returns the row and the secret; the secret is never stored and never shown again."""
    if not name or len(name) > 200:
        raise ServiceError("Give the token a name of at most 200 characters.", field="name")
    if role is not None and role not in Role.values:
        raise ServiceError("Unknown role.", field="role")
    if service_account and (workspace is None or role is None):
        raise ServiceError("Service-account tokens need a workspace and a role.", field="workspace")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    prefix = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=None if service_account else user,
        workspace=workspace,
        role=role,
        name=name,
        prefix=prefix,
        token_hash=digest(secret),
        created_by=user,
        expires_at=expires_at,
    )
    return token, secret


def revoke_token(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def create_share_link(
    *,
    project: Project,
    user,  # type: ignore[no-untyped-def]
    run: Run | None = None,
    label: str = "",
    expires_at: datetime | None = None,
) -> tuple[ShareLink, str]:
    if run is not None and run.project_id != project.pk:
        raise ServiceError("That run is not in this project.", field="run")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("The expiry must be in the future.", field="expires_at")
    secret = f"{SHARE_PREFIX}{secrets.token_urlsafe(24)}"  # 192 bits
    link = ShareLink.objects.create(
        project=project,
        run=run,
        token_hash=digest(secret),
        prefix=secret[:10],
        label=label[:200],
        role=Role.VIEWER,
        created_by=user,
        expires_at=expires_at,
    )
    return link, secret


def revoke_share_link(link: ShareLink) -> None:
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])


def resolve_share_secret(secret: str) -> ShareLink | None:
    """The active link for a secret, counting the use; None when unknown, revoked or expired."""
    if not secret or len(secret) > 200:
        return None
    link = (
        ShareLink.objects.select_related("project__workspace")
        .filter(token_hash=digest(secret))
        .first()
    )
    if link is None or not link.is_active():
        return None
    now = timezone.now()
    from django.db.models import F

    ShareLink.objects.filter(pk=link.pk).update(last_used_at=now, use_count=F("use_count") + 1)
    return link


def resolve_token_secret(secret: str) -> ApiToken | None:
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user", "workspace")
        .filter(token_hash=digest(secret))
        .first()
    )
    if token is None or not token.is_active():
        return None
    if token.user is not None and not token.user.is_active:
        return None
    now = timezone.now()
    # Touch last_used at most once a minute: a write per request would serialise hot clients.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token
