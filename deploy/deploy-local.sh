#!/usr/bin/env bash
# `make deploy` on the single-node cluster of `make cluster` (CLUSTER=local; deploy.sh
# picks it when kind cannot run). Idempotent:
#   the cluster (started with deploy/cluster.sh when context cloudmart-local does not
#   answer) -> `make images` + the air-gapped Kafka/PostgreSQL/Jaeger images
#   (deploy/airgap-infra.sh) -> imported into the node's containerd (only when changed) ->
#   helm upgrade --install charts/cloudmart -f deploy/cluster/values.yaml --wait
#   --wait-for-jobs -> helm test -> how to reach it.
# Environment: NAMESPACE (cloudmart), RELEASE (cloudmart), IMAGE_TAG (dev), SKIP_BUILD=1,
# SKIP_TEST=1, HELM_EXTRA_ARGS, DOCKER (docker), HELM / KUBECTL (paths).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAMESPACE=${NAMESPACE:-cloudmart}
RELEASE=${RELEASE:-cloudmart}
IMAGE_TAG=${IMAGE_TAG:-dev}
CONTEXT=cloudmart-local
VALUES=$ROOT/deploy/cluster/values.yaml
export DOCKER=${DOCKER:-docker}
CLOUDMART_CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
export CLOUDMART_CACHE

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\n\033[31mdeploy: %s\033[0m\n' "$*" >&2; exit 1; }
log() { info "$*"; }
run() { printf '+ %s\n' "$(printf '%q ' "$@")"; "$@"; }
cd "$ROOT"
t0=$SECONDS

TOOLS=$CLOUDMART_CACHE/k8s-tools
# shellcheck source=deploy/k8s-tools.sh
. "$ROOT/deploy/k8s-tools.sh"
HELM=$(pick_tool helm "${HELM:-}")
KUBECTL=$(pick_tool kubectl "${KUBECTL:-}")

step "cluster (context $CONTEXT)"
if "$KUBECTL" --context "$CONTEXT" get --raw /readyz >/dev/null 2>&1; then
  info "context $CONTEXT answers; using it"
else
  info "context $CONTEXT does not answer: starting the local cluster (make cluster)"
  run bash deploy/cluster.sh up
fi

# image refs of the infrastructure, as the values file names them
infra_images=()
while read -r repo tag; do infra_images+=("$repo:$tag"); done < <(
  awk '/^(kafka|postgresql|jaeger):/ {p=1; next} /^[a-z]/ {p=0}
       p && /repository:/ {r=$2} p && /tag:/ {gsub(/"/, "", $2); print r, $2}' "$VALUES")
((${#infra_images[@]} == 3)) || die "could not read the three infrastructure images from $VALUES"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "images (tag $IMAGE_TAG) and the air-gapped infrastructure images"
  run env IMAGE_TAG="$IMAGE_TAG" bash deploy/images.sh
  run bash deploy/airgap-infra.sh
fi
step "images into the node's containerd (no registry)"
images=()
for t in order delivery timesale tools; do images+=("cloudmart/$t:$IMAGE_TAG"); done
run bash deploy/cluster.sh import "${images[@]}" "${infra_images[@]}"

step "helm upgrade --install $RELEASE (namespace $NAMESPACE, context $CONTEXT)"
helm_args=(upgrade --install "$RELEASE" charts/cloudmart --kube-context "$CONTEXT"
  --namespace "$NAMESPACE" --create-namespace -f "$VALUES"
  --set-string "image.tag=$IMAGE_TAG" --wait --wait-for-jobs --timeout 10m)
for t in order delivery timesale; do
  id=$("$DOCKER" image inspect -f '{{.Id}}' "cloudmart/$t:$IMAGE_TAG" 2>/dev/null || true)
  [[ -z "$id" ]] || helm_args+=(--set-string "$t.podAnnotations.cloudmart\\.io/image-id=${id#sha256:}")
done
# shellcheck disable=SC2206
helm_args+=(${HELM_EXTRA_ARGS:-})
run "$HELM" "${helm_args[@]}"
run "$KUBECTL" config set-context "$CONTEXT" --namespace "$NAMESPACE" >/dev/null

if [[ "${SKIP_TEST:-0}" != 1 ]]; then
  step "helm test (one order through the saga)"
  run "$HELM" test "$RELEASE" --kube-context "$CONTEXT" --namespace "$NAMESPACE" --logs --timeout 5m
fi

step "cloudmart is running on the local cluster ($CONTEXT, namespace $NAMESPACE) — $((SECONDS - t0)) s"
"$KUBECTL" --context "$CONTEXT" -n "$NAMESPACE" get pods,hpa
cat <<EOF

  reach it (ClusterIP services; port-forward from this host)
    kubectl -n $NAMESPACE port-forward svc/$RELEASE-order 50051:50051 &
    grpcurl -plaintext localhost:50051 list
    kubectl -n $NAMESPACE port-forward svc/$RELEASE-jaeger 16686:16686 &   # Jaeger query API

  next steps
    make load                   the rush, watched by the real HPA (kubectl cloudmart load)
    make e2e-cluster            the cluster test suite against this context
    kubectl cloudmart status    pods, HPA, orders, DLQ
    make undeploy               remove the release; make cluster-down: the cluster
EOF
