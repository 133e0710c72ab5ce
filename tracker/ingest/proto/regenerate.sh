#!/usr/bin/env bash
# Regenerates the *_pb2.py modules from the .proto sources in this directory.
#
# Dev-time only: grpcio-tools is NOT a runtime dependency. It is pinned to
# 1.66.0 because that release bundles protoc 27.2, whose generated code
# (gencode 5.27.2) is accepted by every protobuf runtime >= 5.27.2 (the
# runtime refuses gencode that is newer than itself, not older). Install it in
# a throwaway venv so it cannot change the project's protobuf runtime:
#
#   python3.11 -m venv /tmp/protoc-venv
#   /tmp/protoc-venv/bin/pip install grpcio-tools==1.66.0
#   PROTOC_PYTHON=/tmp/protoc-venv/bin/python tracker/ingest/proto/regenerate.sh
#
# Run from anywhere; paths are resolved against the repository root so that the
# .proto files register as "tracker/ingest/proto/<name>.proto" in the
# descriptor pool and imports come out as `from tracker.ingest.proto import ...`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
py="${PROTOC_PYTHON:-python}"
cd "$root"
rm -f tracker/ingest/proto/*_pb2.py
"$py" -m grpc_tools.protoc -I. --python_out=. tracker/ingest/proto/*.proto
