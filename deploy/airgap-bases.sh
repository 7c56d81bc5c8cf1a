#!/usr/bin/env bash
# Builds, from Debian packages only (no container registry), local stand-ins for the two
# base images deploy/Dockerfile takes as build args:
#
#   cloudmart/airgap-rust:<rustc version>  RUST_IMAGE: Debian bookworm (debootstrap
#       minbase) + gcc/g++/make/pkg-config + this machine's Rust toolchain (rustc, cargo,
#       std, no docs) + this machine's CA bundle (so cargo reaches crates.io also behind a
#       TLS-inspecting proxy)
#   cloudmart/airgap-runtime:bookworm      RUNTIME_IMAGE: the equivalent of distroless
#       `cc-debian12:nonroot`, assembled with `apt-get download` + `dpkg -x`: glibc's
#       shared libraries, libgcc_s, CA certificates, tzdata, /etc/passwd with nonroot
#       (65532) and /home/nonroot — no shell, no package manager
#
# Users with a registry keep the public bases (rust:1.94-bookworm and
# gcr.io/distroless/cc-debian12:nonroot); nothing else in the Dockerfile differs.
# `make images` calls this when no registry answers (or AIRGAP=1). Existing images are
# reused; FORCE=1 rebuilds them. Needs root (debootstrap), docker, debootstrap, apt-get.
set -euo pipefail

DOCKER=${DOCKER:-docker}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}

say() { printf 'airgap-bases: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

have_image() { [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

command -v rustc >/dev/null || die "rustc not found: the build image carries this machine's Rust toolchain"
rust_version=$(rustc --version | awk '{print $2}')
RUST_TAG=cloudmart/airgap-rust:$rust_version
RUNTIME_TAG=cloudmart/airgap-runtime:$SUITE

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-airgap.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the Rust build image -------------------------------------------------------------------
build_rust_image() {
  command -v debootstrap >/dev/null || die "debootstrap not found (Debian: apt-get install debootstrap)"
  local root=$work/rust-root sysroot
  local cached=$CACHE/airgap/debootstrap-$SUITE.tar
  if [ ! -f "$cached" ]; then
    say "debootstrap --variant=minbase $SUITE (once; cached as $cached)"
    mkdir -p "$(dirname "$cached")" "$root"
    debootstrap --variant=minbase --include=ca-certificates,gcc,g++,make,pkg-config,libc6-dev,perl,python3-minimal \
      "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man"
    tar -C "$root" -cf "$cached.tmp" . && mv "$cached.tmp" "$cached"
  else
    mkdir -p "$root"
    tar -C "$root" -xf "$cached"
  fi
  sysroot=$(rustc --print sysroot)
  say "adding the Rust $rust_version toolchain from $sysroot (without docs)"
  mkdir -p "$root/usr/local/rust"
  tar -C "$sysroot" --exclude=./share/doc --exclude=./share/man -cf - . | tar -C "$root/usr/local/rust" -xf -
  # cargo may live beside rustc (rustup) or elsewhere; take the real binary, not a proxy.
  local cargo
  cargo=$(rustup which cargo 2>/dev/null || command -v cargo)
  cp "$cargo" "$root/usr/local/rust/bin/cargo"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$root/usr/local/cargo"
  say "importing $RUST_TAG"
  tar -C "$root" -c . | "$DOCKER" import \
    -c 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV CARGO_HOME=/usr/local/cargo' \
    -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    -c 'WORKDIR /src' - "$RUST_TAG" >/dev/null
}

# --- the runtime image ----------------------------------------------------------------------
build_runtime_image() {
  local root=$work/runtime-root debs=$work/debs arch
  arch=$(dpkg --print-architecture)
  mkdir -p "$root" "$debs"
  say "apt-get download libc6 libgcc-s1 ca-certificates tzdata ($arch)"
  (cd "$debs" && apt-get download libc6 libgcc-s1 ca-certificates tzdata >/dev/null) \
    || die "apt-get download failed (run apt-get update first?)"
  local d
  for d in "$debs"/*.deb; do dpkg -x "$d" "$work/x"; done
  # Keep only what a dynamically linked Rust binary needs: the loader, glibc's shared
  # libraries (not gconv, locales or its tools), libgcc_s; plus zoneinfo and certificates.
  mkdir -p "$root/lib" "$root/usr/share" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  cp -a "$work/x/lib64" "$root/" 2>/dev/null || true
  (cd "$work/x" && find . -path './usr/lib/*-linux-gnu/*.so*' -o -path './lib/*-linux-gnu/*.so*' | grep -v gconv) \
    | while read -r f; do mkdir -p "$root/$(dirname "$f")"; cp -a "$work/x/$f" "$root/$f"; done
  [ -d "$work/x/lib64" ] || [ -d "$root/usr/lib" ] || die "no libraries extracted"
  cp -a "$work/x/usr/share/zoneinfo" "$root/usr/share/"
  # The Debian CA bundle (update-ca-certificates would build it at install time).
  find "$work/x/usr/share/ca-certificates" -name '*.crt' -exec cat {} + >"$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  say "importing $RUNTIME_TAG"
  tar -C "$root" -c . | "$DOCKER" import \
    -c 'USER 65532:65532' -c 'WORKDIR /home/nonroot' \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$RUNTIME_TAG" >/dev/null
}

if have_image "$RUST_TAG"; then say "$RUST_TAG present"; else build_rust_image; fi
if have_image "$RUNTIME_TAG"; then say "$RUNTIME_TAG present"; else build_runtime_image; fi
for t in "$RUST_TAG" "$RUNTIME_TAG"; do
  printf '%s\t%s MiB\n' "$t" "$(( $("$DOCKER" image inspect -f '{{.Size}}' "$t") / 1048576 ))" >&2
done
echo "RUST_IMAGE=$RUST_TAG RUNTIME_IMAGE=$RUNTIME_TAG"
