"""Storage left behind by interrupted work, found from the S3 side.

`artifacts.cleanup_stale_uploads` aborts the uploads of pending Artifact rows. This covers what
no row points at: a multipart upload created just before its transaction rolled back (database
outage, crash), the multipart uploads and `tmp/` objects of a large `put_stream` whose process
died, and completed uploads under `uploads/` that no verifying artifact owns any more (its run
was deleted before the worker checked it, or the completing request rolled back). Incomplete
multipart uploads cost storage until aborted, invisibly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from ..models import Artifact, ArtifactState
from ..storage import S3BlobStore, get_blob_store

ORPHAN_AFTER = timedelta(hours=24)


@dataclass
class CleanupReport:
    aborted_uploads: int = 0
    deleted_tmp_objects: int = 0
    deleted_upload_objects: int = 0


def _older(when: datetime, cutoff: datetime) -> bool:
    return when.tzinfo is not None and when < cutoff


def abort_orphan_uploads(older_than: timedelta = ORPHAN_AFTER) -> CleanupReport:
    """Abort multipart uploads under our prefix that are old and not owned by a pending row."""
    report = CleanupReport()
    store = get_blob_store()
    if not isinstance(store, S3BlobStore):
        return report  # the local store writes temp files it removes itself
    cutoff = timezone.now() - older_than
    live = set(
        Artifact.objects.filter(state=ArtifactState.PENDING)
        .exclude(upload_id="")
        .values_list("upload_id", flat=True)
    )
    client, bucket = store.client, store.bucket
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=store.prefix
    ):
        for upload in page.get("Uploads", []):
            if upload["UploadId"] in live or not _older(upload["Initiated"], cutoff):
                continue
            try:
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                report.aborted_uploads += 1
            except client.exceptions.NoSuchUpload:
                pass  # completed or aborted meanwhile
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{store.prefix}tmp/"
    ):
        for obj in page.get("Contents", []):
            if _older(obj["LastModified"], cutoff):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                report.deleted_tmp_objects += 1
    owned = set(
        Artifact.objects.filter(state=ArtifactState.VERIFYING).values_list(
            "metadata__upload_key", flat=True
        )
    )
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=store.upload_key("")
    ):
        for obj in page.get("Contents", []):
            if obj["Key"] not in owned and _older(obj["LastModified"], cutoff):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                report.deleted_upload_objects += 1
    return report
