#!/usr/bin/env bash
# `make images`: builds cloudmart/order, cloudmart/delivery, cloudmart/timesale and
# cloudmart/tools (tag IMAGE_TAG, default dev) from deploy/Dockerfile, prints each image's
# size and checks the service images against the size budget.
#
# Bases: the public ones (rust:1.94-bookworm, gcr.io/distroless/cc-debian12:nonroot) when
# a registry answers; otherwise — or with AIRGAP=1 — local stand-ins built from Debian
# packages by deploy/airgap-bases.sh. RUST_IMAGE / RUNTIME_IMAGE override either.
#
# Docker: DOCKER (default: docker); deploy/docker-builder.sh picks BuildKit or the classic
# builder (and Debian's /usr/bin/docker over a newer client without buildx).
#
# Other settings: IMAGE_TAG (dev), IMAGE_SIZE_BUDGET_MIB (30, service images only),
# CHECK=1 also runs deploy/check-images.sh afterwards.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=${DOCKER:-docker}
TAG=${IMAGE_TAG:-dev}
BUDGET=${IMAGE_SIZE_BUDGET_MIB:-30}
PUBLIC_RUST=rust:1.94-bookworm
PUBLIC_RUNTIME=gcr.io/distroless/cc-debian12:nonroot

say() { printf 'images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v "$DOCKER" >/dev/null || die "$DOCKER not found: install Docker (Debian: apt-get install docker.io)"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

# --- which builder ---------------------------------------------------------------------------
# shellcheck source=deploy/docker-builder.sh
. "$ROOT/deploy/docker-builder.sh"

# docker pull, bounded where coreutils' timeout exists (macOS has none by default).
pull() {
  if command -v timeout >/dev/null 2>&1; then
    timeout 600 "$DOCKER" pull -q "$1" >/dev/null 2>&1
  else
    "$DOCKER" pull -q "$1" >/dev/null 2>&1
  fi
}

# --- which bases -----------------------------------------------------------------------------
rust_image=${RUST_IMAGE:-}
runtime_image=${RUNTIME_IMAGE:-}
if [ -z "$rust_image" ] || [ -z "$runtime_image" ]; then
  airgap=${AIRGAP:-}
  if [ -z "$airgap" ]; then
    if "$DOCKER" image inspect "$PUBLIC_RUST" >/dev/null 2>&1 && "$DOCKER" image inspect "$PUBLIC_RUNTIME" >/dev/null 2>&1; then
      airgap=0
    elif pull "$PUBLIC_RUNTIME" && pull "$PUBLIC_RUST"; then
      airgap=0
    else
      say "no registry answers: building air-gapped bases from Debian packages"
      airgap=1
    fi
  fi
  if [ "$airgap" = 1 ]; then
    bases=$(DOCKER=$DOCKER bash "$ROOT/deploy/airgap-bases.sh")
    rust_image=${rust_image:-$(echo "$bases" | sed -n 's/.*RUST_IMAGE=\([^ ]*\).*/\1/p')}
    runtime_image=${runtime_image:-$(echo "$bases" | sed -n 's/.*RUNTIME_IMAGE=\([^ ]*\).*/\1/p')}
  else
    rust_image=${rust_image:-$PUBLIC_RUST}
    runtime_image=${runtime_image:-$PUBLIC_RUNTIME}
  fi
fi
say "bases: RUST_IMAGE=$rust_image RUNTIME_IMAGE=$runtime_image"

# --- build -----------------------------------------------------------------------------------
for target in order delivery timesale tools; do
  say "building cloudmart/$target:$TAG"
  "$DOCKER" build -f "$ROOT/deploy/Dockerfile" --target "$target" \
    --build-arg RUST_IMAGE="$rust_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
    -t "cloudmart/$target:$TAG" "$ROOT" || die "docker build --target $target failed"
done

# --- sizes -----------------------------------------------------------------------------------
over=""
printf '\n%-28s %10s\n' image "size MiB"
for target in order delivery timesale tools; do
  bytes=$("$DOCKER" image inspect -f '{{.Size}}' "cloudmart/$target:$TAG")
  mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  printf '%-28s %10s\n' "cloudmart/$target:$TAG" "$mib"
  if [ "$target" != tools ] && [ "$bytes" -gt $((BUDGET * 1048576)) ]; then over="$over cloudmart/$target:$TAG ($mib MiB)"; fi
done
mkdir -p "$ROOT/target/bench"
{
  printf '{"budget_mib": %s, "images": {' "$BUDGET"
  sep=""
  for target in order delivery timesale tools; do
    printf '%s"%s": %s' "$sep" "$target" "$("$DOCKER" image inspect -f '{{.Size}}' "cloudmart/$target:$TAG")"
    sep=", "
  done
  printf '}, "rust_image": "%s", "runtime_image": "%s"}\n' "$rust_image" "$runtime_image"
} >"$ROOT/target/bench/image-sizes.json"
say "sizes written to target/bench/image-sizes.json"
[ -z "$over" ] || die "over the ${BUDGET} MiB budget:$over"
if [ "${CHECK:-0}" = 1 ]; then DOCKER=$DOCKER IMAGE_TAG=$TAG bash "$ROOT/deploy/check-images.sh"; fi
