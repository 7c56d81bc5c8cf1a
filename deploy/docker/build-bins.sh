#!/bin/sh
# Builds the image binaries with the `image` profile (deploy/Dockerfile runs it twice: on
# the dependency skeleton, then on the real sources). Services without default features
# (no SQLite: images run on PostgreSQL); tools with them (cloudmart-audit reads any URL).
#
#   build-bins.sh [--offline] [--collect DIR]
#
# --collect copies the binaries to DIR/services and DIR/tools and fails when one needs a
# shared library beyond the runtime base's (glibc's libraries and libgcc_s).
set -eu
offline=""
collect=""
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=--offline ;;
    --collect) collect=$2; shift ;;
    *) echo "build-bins.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
services="cloudmart-order cloudmart-delivery cloudmart-timesale"
tools="cloudmart-smoke cloudmart-load cloudmart-audit kubectl-cloudmart"
# shellcheck disable=SC2086 # $offline is empty or one flag
cargo build --locked $offline --profile image --no-default-features \
  -p cloudmart-order -p cloudmart-delivery -p cloudmart-timesale
# shellcheck disable=SC2086
cargo build --locked $offline --profile image \
  -p cloudmart-e2e --bin cloudmart-smoke --bin cloudmart-load --bin cloudmart-audit \
  -p cloudmart-kubectl --bin kubectl-cloudmart
[ -n "$collect" ] || exit 0

mkdir -p "$collect/services" "$collect/tools"
for b in $services; do
  test -x "target/image/$b" || { echo "missing service binary $b" >&2; exit 1; }
  cp "target/image/$b" "$collect/services/"
done
for b in $tools; do
  test -x "target/image/$b" || { echo "missing tool binary $b" >&2; exit 1; }
  cp "target/image/$b" "$collect/tools/"
done
# Allowed: the dynamic loader (ld-linux-x86-64.so.2, ld-linux-aarch64.so.1, …), the vDSO,
# and glibc's and libgcc's libraries. Matched on the library's file name, whatever its path.
for b in "$collect"/services/* "$collect"/tools/*; do
  extra=$(ldd "$b" | awk '{print $1}' | sed 's:.*/::' \
    | grep -Ev '^(linux-vdso|linux-gate|ld-linux[^ ]*|libc|libm|libgcc_s|libpthread|libdl|librt)\.so' || true)
  if [ -n "$extra" ]; then
    echo "$b needs libraries the runtime image lacks: $extra" >&2
    exit 1
  fi
done
ls -la "$collect/services" "$collect/tools"
