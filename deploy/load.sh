#!/usr/bin/env bash
# `make load`: the rush on the current kube context through the kubectl plugin
# (`kubectl cloudmart load`, binary kubectl-cloudmart): the load generator runs in the
# cluster as a Job (pod labelled cloudmart.io/client=true) while the plugin watches the
# time-sale HPA and every cloudmart Deployment; it writes the report JSON and a PNG
# (target/load/) and exits non-zero unless the real HPA scaled time-sale — and only
# time-sale — above its minimum (--expect-scale timesale).
#
# Prerequisites: a cluster from `make deploy` (kind or the local one of `make cluster`),
# and either kubectl-cloudmart on PATH, a Rust toolchain (it is built from this checkout),
# or Docker + kind (it runs from the tools image on the kind network).
#
# Environment: SALE_RPS (default 250), DURATION (default 120s), STOCK (3000: the sale sells
# out and the rest of the rush is refused SOLD_OUT, so no saga backlog outlives the load;
# empty: the load generator's unlimited sale), NAMESPACE (cloudmart),
# IMAGE_TAG (dev: the tools image the load Job runs), KIND_CLUSTER (cloudmart),
# EXPECT_SCALE (timesale; empty: no verdict), OUT (target/load), DRY_RUN=1; extra
# arguments are passed to `kubectl cloudmart load` unchanged.
set -euo pipefail

NAMESPACE=${NAMESPACE:-cloudmart}
SALE_RPS=${SALE_RPS:-250}
DURATION=${DURATION:-120s}
DRY_RUN=${DRY_RUN:-0}
IMAGE_TAG=${IMAGE_TAG:-dev}
KIND_CLUSTER=${KIND_CLUSTER:-cloudmart}
EXPECT_SCALE=${EXPECT_SCALE-timesale}
OUT=${OUT:-target/load}
STOCK=${STOCK-3000}

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
  # the whole workspace, as make build does: after make test (or make dev) it compiles nothing
  run cargo build --locked --release --bins
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
  run kind get kubeconfig --internal --name "$KIND_CLUSTER" >"$kubeconfig"
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
verdict=()
[[ -z "$EXPECT_SCALE" ]] || verdict=(--expect-scale "$EXPECT_SCALE")
[[ -z "$STOCK" ]] || verdict+=(--stock "$STOCK")
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT"
run "${plugin[@]}" load --namespace "$NAMESPACE" --sale-rps "$SALE_RPS" --duration "$DURATION" \
  --image "cloudmart/tools:$IMAGE_TAG" "${verdict[@]}" --report "$OUT/report.json" --chart "$OUT/load.png" "$@"
