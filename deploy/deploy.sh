#!/usr/bin/env bash
# `make deploy`: cloudmart on a local kind cluster, from zero, idempotently.
#
#   preflight (docker, kind, kubectl, helm, memory) -> kind cluster "cloudmart" (created
#   if absent) -> docker build + kind load of the four images -> metrics-server (with
#   --kubelet-insecure-tls, which kind needs) -> helm upgrade --install --wait -> helm test
#   -> endpoints and next steps.
#
# Running it again rebuilds the images and upgrades the release in place; pods restart
# only when their image changed (the image id is a pod annotation).
#
# Environment: DRY_RUN=1 prints the commands instead of running them; CLUSTER (cloudmart),
# NAMESPACE (cloudmart), RELEASE (cloudmart), IMAGE_TAG (dev), MIN_MEMORY_GIB (4),
# SKIP_BUILD=1 (reuse loaded images), SKIP_TEST=1 (no helm test), HELM_EXTRA_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${CLUSTER:-cloudmart}
NAMESPACE=${NAMESPACE:-cloudmart}
RELEASE=${RELEASE:-cloudmart}
IMAGE_TAG=${IMAGE_TAG:-dev}
MIN_MEMORY_GIB=${MIN_MEMORY_GIB:-4}
DRY_RUN=${DRY_RUN:-0}
METRICS_SERVER_URL=${METRICS_SERVER_URL:-https://github.com/kubernetes-sigs/metrics-server/releases/latest/download/components.yaml}
IMAGES=(order delivery timesale tools)
CONTEXT="kind-$CLUSTER"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\n\033[31mdeploy: %s\033[0m\n' "$*" >&2; exit 1; }
# run CMD...: print it; execute it unless DRY_RUN=1
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

cd "$ROOT"
[[ "$DRY_RUN" == 1 ]] && info "DRY_RUN=1: printing the commands, running none of them"

# --- preflight --------------------------------------------------------------------------
step "preflight"
if [[ "$DRY_RUN" != 1 ]]; then
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH. Install it:
    docker  https://docs.docker.com/get-docker/
    kind    https://kind.sigs.k8s.io/docs/user/quick-start/#installation  (>= 0.24 enforces NetworkPolicies)
    kubectl https://kubernetes.io/docs/tasks/tools/
    helm    https://helm.sh/docs/intro/install/  (3.8+ or 4)"
  done
  docker info >/dev/null 2>&1 || die "the Docker daemon is not running (or this user may not use it): start Docker Desktop / 'sudo systemctl start docker'"
  info "docker  $(docker version --format '{{.Server.Version}}' 2>/dev/null) ($(docker info --format '{{.OSType}}/{{.Architecture}}'))"
  info "kind    $(kind version)"
  info "kubectl $(kubectl version --client 2>/dev/null | head -n1)"
  info "helm    $(helm version --short)"
  mem=$(docker info --format '{{.MemTotal}}')
  mem_gib=$((mem / 1024 / 1024 / 1024))
  info "memory available to Docker: ${mem_gib} GiB (the install requests ~2 GiB, limits ≤ 4 GiB)"
  if ((mem < MIN_MEMORY_GIB * 1024 * 1024 * 1024 - 256 * 1024 * 1024)); then
    die "Docker has ${mem_gib} GiB of memory; cloudmart on kind needs at least ${MIN_MEMORY_GIB} GiB.
    Raise it in Docker Desktop > Settings > Resources (or set MIN_MEMORY_GIB to override)."
  fi
else
  info "(skipped in a dry run: docker daemon, kind/kubectl/helm versions, ${MIN_MEMORY_GIB} GiB memory)"
fi

# --- cluster ----------------------------------------------------------------------------
step "kind cluster '$CLUSTER'"
if [[ "$DRY_RUN" != 1 ]] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  info "exists; reusing it"
else
  run kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml --wait 120s
fi
run kubectl config use-context "$CONTEXT"

# --- images -----------------------------------------------------------------------------
declare -A IMAGE_IDS=()
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "images (tag $IMAGE_TAG, built for this machine's architecture)"
  for target in "${IMAGES[@]}"; do
    run docker build -f deploy/Dockerfile --target "$target" -t "cloudmart/$target:$IMAGE_TAG" .
  done
  for target in "${IMAGES[@]}"; do
    run kind load docker-image "cloudmart/$target:$IMAGE_TAG" --name "$CLUSTER"
    if [[ "$DRY_RUN" != 1 ]]; then
      IMAGE_IDS[$target]=$(docker image inspect -f '{{.Id}}' "cloudmart/$target:$IMAGE_TAG")
      size=$(docker image inspect -f '{{.Size}}' "cloudmart/$target:$IMAGE_TAG")
      info "cloudmart/$target:$IMAGE_TAG $((size / 1024 / 1024)) MiB"
      if [[ "$target" != tools ]] && ((size > 30 * 1024 * 1024)); then
        info "warning: cloudmart/$target is larger than the 30 MiB target"
      fi
    fi
  done
fi

# --- metrics-server ---------------------------------------------------------------------
step "metrics-server (the HPA reads CPU from it)"
run kubectl apply -f "$METRICS_SERVER_URL"
if [[ "$DRY_RUN" == 1 ]] || ! kubectl -n kube-system get deployment metrics-server \
    -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- '--kubelet-insecure-tls'; then
  # kind's kubelets serve self-signed certificates
  run kubectl -n kube-system patch deployment metrics-server --type=json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]'
else
  info "--kubelet-insecure-tls already set"
fi
run kubectl -n kube-system rollout status deployment/metrics-server --timeout=180s

# --- the chart --------------------------------------------------------------------------
step "helm upgrade --install $RELEASE (namespace $NAMESPACE)"
helm_args=(upgrade --install "$RELEASE" charts/cloudmart
  --namespace "$NAMESPACE" --create-namespace
  -f deploy/kind/values.yaml
  --set-string "image.tag=$IMAGE_TAG"
  --wait --timeout 10m)
for target in order delivery timesale; do
  if [[ -n "${IMAGE_IDS[$target]:-}" ]]; then
    # a rebuilt image under the same tag must roll the pods
    helm_args+=(--set-string "$target.podAnnotations.cloudmart\\.io/image-id=${IMAGE_IDS[$target]#sha256:}")
  fi
done
# shellcheck disable=SC2206
helm_args+=(${HELM_EXTRA_ARGS:-})
run helm "${helm_args[@]}"
run kubectl config set-context "$CONTEXT" --namespace "$NAMESPACE"

if [[ "${SKIP_TEST:-0}" != 1 ]]; then
  step "helm test (one order through the saga)"
  run helm test "$RELEASE" --namespace "$NAMESPACE" --logs --timeout 5m
fi

# --- done -------------------------------------------------------------------------------
step "cloudmart is running on kind ($CONTEXT, namespace $NAMESPACE)"
cat <<EOF
    Jaeger UI       http://localhost:16686        (traces; pick service "order")
    order gRPC      localhost:50051               grpcurl -plaintext localhost:50051 list
    delivery gRPC   localhost:50052
    timesale gRPC   localhost:50053
    OTLP/gRPC       localhost:4317

  next steps
    make load                               load a time sale through the kubectl plugin
    kubectl get hpa -n $NAMESPACE -w          watch time-sale scale out (and back in)
    kubectl get pods -n $NAMESPACE            kubectl top pods -n $NAMESPACE
    make undeploy                           remove the release (make kind-down: the cluster)
EOF
