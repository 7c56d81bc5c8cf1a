#!/usr/bin/env bash
# Prometheus's own tools, built once from the Go module proxy (github.com/prometheus/prometheus,
# version pinned in deploy/prometheus/go.mod) and cached:
#
#   bash deploy/prometheus/build.sh promtool     # prints the path of promtool
#   bash deploy/prometheus/build.sh prometheus   # prints the path of prometheus
#
# Output: $CLOUDMART_CACHE/prometheus-<version>/<name> (never rebuilt once there). Cold Go
# cache on 2 cores: a few minutes for promtool.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
version=$(sed -n 's:^[[:space:]]*github.com/prometheus/prometheus \(v[0-9.]*\).*:\1:p' "$here/go.mod" | head -1)
name=${1:-promtool}
say() { printf 'prometheus/build: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

case "$name" in
  promtool | prometheus) ;;
  -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown tool '$name' (promtool or prometheus)" ;;
esac
[[ -n "$version" ]] || die "github.com/prometheus/prometheus not found in $here/go.mod"
bin=$cache/prometheus-$version
if [[ ! -x "$bin/$name" ]]; then
  command -v go >/dev/null || die "go not found: the Go toolchain builds $name $version the first time"
  mkdir -p "$bin"
  say "building $name $version into $bin (once)"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -ldflags "-s -w" -o "$bin/$name.tmp.$$" \
    "github.com/prometheus/prometheus/cmd/$name") || die "go build of $name failed"
  mv "$bin/$name.tmp.$$" "$bin/$name"
fi
echo "$bin/$name"
