#!/usr/bin/env bash
# `make load`: a time-sale load test inside the kind cluster through the kubectl plugin
# (`kubectl cloudmart load`, binary kubectl-cloudmart), which runs the load generator in
# a pod labelled cloudmart.io/client=true and prints a report.
#
# Environment: SALE_RPS (default 200), DURATION (default 120s), NAMESPACE (cloudmart),
# DRY_RUN=1; extra arguments are passed to `kubectl cloudmart load` unchanged.
set -euo pipefail

NAMESPACE=${NAMESPACE:-cloudmart}
SALE_RPS=${SALE_RPS:-200}
DURATION=${DURATION:-120s}
DRY_RUN=${DRY_RUN:-0}

run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

plugin=""
if command -v kubectl-cloudmart >/dev/null 2>&1; then
  plugin=kubectl-cloudmart
else
  # Not installed: build it from this checkout (the Rust toolchain is already needed for
  # `make dev`). `cargo install --path e2e/kubectl` puts it on PATH for good, after which
  # `kubectl cloudmart …` works from anywhere.
  target_dir=${CARGO_TARGET_DIR:-target}
  run cargo build --release --locked -p cloudmart-kubectl --bin kubectl-cloudmart
  plugin="$target_dir/release/kubectl-cloudmart"
  if [[ ! -x "$plugin" && "$DRY_RUN" != 1 ]]; then
    echo "load: building kubectl-cloudmart did not produce $plugin" >&2
    exit 1
  fi
fi

cat <<EOF
==> time-sale load: ${SALE_RPS} purchases/s for ${DURATION} (namespace ${NAMESPACE})
    In another terminal, watch the autoscaler react:
      kubectl get hpa -n ${NAMESPACE} -w
      kubectl get pods -n ${NAMESPACE} -l app.kubernetes.io/name=timesale -w
EOF
run "${plugin:-kubectl-cloudmart}" load --namespace "$NAMESPACE" --sale-rps "$SALE_RPS" --duration "$DURATION" "$@"
