"""Domain models, one module per area; import from here."""

from .jobs import IdempotencyRecord, IngestJob, JobKind, JobState, UploadChunk, UploadFile
from .media import (
    Artifact,
    ArtifactKind,
    ArtifactState,
    Blob,
    Histogram,
    Image,
    PRCurve,
    TextEntry,
)
from .projects import Project, ProjectMembership, Visibility
from .runs import ColumnKey, ColumnKeyKind, Param, ParamType, Run, RunSource, RunStatus
from .series import Series, SeriesChunk, SeriesKind
from .sharing import ApiToken, ShareLink, digest
from .workspaces import ROLE_RANK, Membership, Role, Workspace, max_role, min_role

__all__ = [
    "ROLE_RANK",
    "ApiToken",
    "Artifact",
    "ArtifactKind",
    "ArtifactState",
    "Blob",
    "ColumnKey",
    "ColumnKeyKind",
    "Histogram",
    "IdempotencyRecord",
    "Image",
    "IngestJob",
    "JobKind",
    "JobState",
    "Membership",
    "PRCurve",
    "Param",
    "ParamType",
    "Project",
    "ProjectMembership",
    "Role",
    "Run",
    "RunSource",
    "RunStatus",
    "Series",
    "SeriesChunk",
    "SeriesKind",
    "ShareLink",
    "TextEntry",
    "UploadChunk",
    "UploadFile",
    "Visibility",
    "Workspace",
    "digest",
    "max_role",
    "min_role",
]
