#!/usr/bin/env bash
# Prints the path of a grpcurl binary: GRPCURL if set, the one on PATH, or one built once
# with the Go toolchain from the Go module proxy into $CLOUDMART_CACHE (pinned version).
# Exit 3 when none can be had (no Go toolchain): callers skip with that message.
set -euo pipefail
version=v1.9.4
if [ -n "${GRPCURL:-}" ]; then echo "$GRPCURL"; exit 0; fi
if command -v grpcurl >/dev/null; then command -v grpcurl; exit 0; fi
dir=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}/grpcurl-$version
if [ ! -x "$dir/grpcurl" ]; then
  command -v go >/dev/null || { echo "grpcurl.sh: neither grpcurl nor the Go toolchain is installed" >&2; exit 3; }
  echo "grpcurl.sh: go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$version into $dir" >&2
  mkdir -p "$dir"
  GOBIN=$dir go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$version" >&2
fi
echo "$dir/grpcurl"
