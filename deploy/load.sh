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
elif [[ -x target/release/kubectl-cloudmart ]]; then
  plugin=target/release/kubectl-cloudmart
elif [[ -x target/debug/kubectl-cloudmart ]]; then
  plugin=target/debug/kubectl-cloudmart
fi
if [[ -z "$plugin" && "$DRY_RUN" != 1 ]]; then
  cat >&2 <<'EOF'
load: the kubectl plugin `kubectl-cloudmart` is not on PATH (nor in target/).
  Build and install it:   cargo install --path e2e --bin kubectl-cloudmart
  (or cargo build --release --bin kubectl-cloudmart && export PATH="$PWD/target/release:$PATH")
  then run `make load` again; `kubectl cloudmart load --help` lists the options.
EOF
  exit 1
fi

cat <<EOF
==> time-sale load: ${SALE_RPS} purchases/s for ${DURATION} (namespace ${NAMESPACE})
    In another terminal, watch the autoscaler react:
      kubectl get hpa -n ${NAMESPACE} -w
      kubectl get pods -n ${NAMESPACE} -l app.kubernetes.io/name=timesale -w
EOF
run "${plugin:-kubectl-cloudmart}" load --namespace "$NAMESPACE" --sale-rps "$SALE_RPS" --duration "$DURATION" "$@"
