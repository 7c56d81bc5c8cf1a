#!/usr/bin/env bash
# `make load`: a time-sale load test inside the kind cluster through the kubectl plugin
# (`kubectl cloudmart load`, binary kubectl-cloudmart), which runs the load generator in
# a pod labelled cloudmart.io/client=true and prints a report.
#
# Prerequisites: a cluster from `make deploy`, and either kubectl-cloudmart on PATH, a Rust
# toolchain (it is built from this checkout), or Docker (it runs from the tools image on
# the kind network with the cluster's internal kubeconfig).
#
# Environment: SALE_RPS (default 200), DURATION (default 120s), NAMESPACE (cloudmart),
# IMAGE_TAG (dev: the tools image the load Job runs), CLUSTER (cloudmart), DRY_RUN=1;
# extra arguments are passed to `kubectl cloudmart load` unchanged.
set -euo pipefail

NAMESPACE=${NAMESPACE:-cloudmart}
SALE_RPS=${SALE_RPS:-200}
DURATION=${DURATION:-120s}
DRY_RUN=${DRY_RUN:-0}
IMAGE_TAG=${IMAGE_TAG:-dev}
CLUSTER=${CLUSTER:-cloudmart}

run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

plugin=()
if command -v kubectl-cloudmart >/dev/null 2>&1; then
  plugin=(kubectl-cloudmart)
elif command -v cargo >/dev/null 2>&1; then
  # Not installed: build it from this checkout. `cargo install --path e2e/kubectl` puts it
  # on PATH for good, after which `kubectl cloudmart …` works from anywhere.
  target_dir=${CARGO_TARGET_DIR:-target}
  run cargo build --release --locked -p cloudmart-kubectl --bin kubectl-cloudmart
  plugin=("$target_dir/release/kubectl-cloudmart")
  if [[ ! -x "${plugin[0]}" && "$DRY_RUN" != 1 ]]; then
    echo "load: building kubectl-cloudmart did not produce ${plugin[0]}" >&2
    exit 1
  fi
elif command -v docker >/dev/null 2>&1 && command -v kind >/dev/null 2>&1; then
  # No Rust toolchain: run the plugin from the tools image, on kind's Docker network,
  # with the kubeconfig that reaches the API server from inside that network.
  kubeconfig=$(mktemp "${TMPDIR:-/tmp}/cloudmart-kubeconfig.XXXXXX")
  trap 'rm -f "$kubeconfig"' EXIT
  run kind get kubeconfig --internal --name "$CLUSTER" >"$kubeconfig"
  chmod 644 "$kubeconfig"
  plugin=(docker run --rm -i --network kind -v "$kubeconfig:/kubeconfig:ro" -e KUBECONFIG=/kubeconfig
    --entrypoint /usr/local/bin/kubectl-cloudmart "cloudmart/tools:$IMAGE_TAG")
else
  echo "load: needs kubectl-cloudmart on PATH, a Rust toolchain to build it, or Docker + kind to run it from the tools image" >&2
  exit 1
fi

cat <<EOF
==> time-sale load: ${SALE_RPS} purchases/s for ${DURATION} (namespace ${NAMESPACE})
    In another terminal, watch the autoscaler react:
      kubectl get hpa -n ${NAMESPACE} -w
      kubectl get pods -n ${NAMESPACE} -l app.kubernetes.io/name=timesale -w
EOF
run "${plugin[@]}" load --namespace "$NAMESPACE" --sale-rps "$SALE_RPS" --duration "$DURATION" \
  --image "cloudmart/tools:$IMAGE_TAG" "$@"
