import io
import os

import pytest

from tracker.storage import BlobNotFound, LocalBlobStore, get_blob_store


def _roundtrip(store):
    small = store.put_bytes(b"hello")
    assert small.size == 5
    assert store.read_bytes(small.sha256) == b"hello"
    assert store.exists(small.sha256)
    again = store.put_bytes(b"hello")
    assert again == small
    big = os.urandom(9 * 1024 * 1024 + 17)
    ref = store.put_stream(io.BytesIO(big))
    assert ref.size == len(big)
    assert b"".join(store.iter_chunks(ref.sha256)) == big
    store.delete(small.sha256)
    assert not store.exists(small.sha256)
    with pytest.raises(BlobNotFound):
        store.read_bytes(small.sha256)
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


@pytest.mark.django_db
def test_s3_store_roundtrip():
    store = get_blob_store()
    assert type(store).__name__ == "S3BlobStore"
    _roundtrip(store)


def test_local_store_roundtrip(tmp_path):
    _roundtrip(LocalBlobStore(tmp_path))
