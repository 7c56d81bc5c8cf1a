#!/usr/bin/env bash
# The binaries of `make cluster`, built once from the Go module proxy and cached:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#     (k8s.io/kubernetes, pinned in deploy/cluster/kube/go.mod: the module's own go.mod
#     replaces k8s.io/* with ./staging/..., so `go install` refuses it; this module
#     requires it and replaces each staging module with its published v0.x release)
#   metrics-server (deploy/cluster/metrics-server/go.mod), coredns (deploy/cluster/coredns),
#   kube-router v2.1.0 (deploy/cluster/kube-router/go.mod; only its NetworkPolicy firewall runs)
#   pause (build/pause/linux/pause.c of the same k8s.io/kubernetes module, gcc -static)
#
#   bash deploy/cluster/build.sh          # build what is missing; prints the bin dir
#
# Output: $CLOUDMART_CACHE/cluster/bin-<kube version>/ (a finished binary is never rebuilt).
# Costs on 2 cores with a cold Go cache: ~15 min for the five kube binaries, ~4 min
# metrics-server, a few minutes CoreDNS and kube-router; with Go's build cache kept, seconds (link only).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
kube_version=$(sed -n "s/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p" "$here/kube/go.mod" | head -1)
bin=$cache/cluster/bin-$kube_version
say() { printf 'cluster/build: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v go >/dev/null || die "go not found: the Go toolchain (1.24+) builds the Kubernetes binaries the first time"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-trimpath

kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
missing=()
for b in "${kube[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if ((${#missing[@]})); then
  minor=${kube_version#v1.}; minor=${minor%%.*}
  vpkg=k8s.io/component-base/version
  ldflags="-s -w -X $vpkg.gitVersion=$kube_version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
  ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  say "building ${missing[*]} $kube_version into $bin (cold Go cache: ~15 min on 2 cores)"
  tmp=$(mktemp -d "$bin/.build.XXXXXX")
  (cd "$here/kube" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") || { rm -rf "$tmp"; die "go build of the Kubernetes binaries failed"; }
  for b in "${missing[@]}"; do mv "$tmp/$b" "$bin/$b"; done
  rm -rf "$tmp"
fi

tool_build() { # dir package name
  local dir=$1 pkg=$2 name=$3
  [[ -x "$bin/$name" ]] && return
  say "building $name ($pkg, pinned in deploy/cluster/$dir/go.mod)"
  (cd "$here/$dir" && go build -ldflags "-s -w" -o "$bin/$name.tmp" "$pkg") || die "go build of $name failed"
  mv "$bin/$name.tmp" "$bin/$name"
}
tool_build metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server metrics-server
tool_build coredns github.com/coredns/coredns coredns
tool_build kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router kube-router

if [[ ! -x "$bin/pause" ]]; then
  command -v gcc >/dev/null || die "gcc not found: it builds the pause binary (static) of the sandbox image"
  src=$(cd "$here/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  [[ -f "$src" ]] || die "pause.c not found at $src"
  say "building pause from $src (gcc -static)"
  gcc -Os -static -DVERSION="\"$kube_version-cloudmart\"" -o "$bin/pause.tmp" "$src" || die "gcc of pause.c failed (static glibc: Debian's libc6-dev)"
  strip "$bin/pause.tmp" 2>/dev/null || true
  mv "$bin/pause.tmp" "$bin/pause"
fi
echo "$bin"
