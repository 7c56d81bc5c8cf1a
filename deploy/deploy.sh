#!/usr/bin/env bash
# `make deploy`: cloudmart on Kubernetes with `helm upgrade --install`, from zero, idempotently.
#
# Which cluster (CLUSTER=kind|local forces one):
#   kind   where `kind` is installed and Docker runs privileged containers: the kind cluster
#          "cloudmart" (KIND_CLUSTER), created if absent; images loaded with `kind load`;
#          metrics-server from its release manifest; NodePorts mapped to localhost.
#   local  otherwise (Linux, root): the single-node cluster of `make cluster`
#          (deploy/cluster.sh, context cloudmart-local), started if absent; images imported
#          into its containerd; CoreDNS and metrics-server are part of it; values
#          deploy/cluster/values.yaml (air-gapped Kafka/PostgreSQL/Jaeger images).
#   Both: the same chart, `helm upgrade --install --wait --wait-for-jobs`, then `helm test`.
#
# Running it again rebuilds the images and upgrades the release in place; pods restart
# only when their image changed (the image id is a pod annotation).
#
# Environment: DRY_RUN=1 prints the commands instead of running them (kind path); CLUSTER
# (kind|local), KIND_CLUSTER (cloudmart), NAMESPACE (cloudmart), RELEASE (cloudmart),
# IMAGE_TAG (dev), MIN_MEMORY_GIB (4), SKIP_BUILD=1 (reuse built images), SKIP_TEST=1 (no
# helm test), HELM_EXTRA_ARGS, DOCKER (docker).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIND_CLUSTER=${KIND_CLUSTER:-cloudmart}
NAMESPACE=${NAMESPACE:-cloudmart}
RELEASE=${RELEASE:-cloudmart}
IMAGE_TAG=${IMAGE_TAG:-dev}
MIN_MEMORY_GIB=${MIN_MEMORY_GIB:-4}
DRY_RUN=${DRY_RUN:-0}
DOCKER=${DOCKER:-docker}
export DOCKER
METRICS_SERVER_URL=${METRICS_SERVER_URL:-https://github.com/kubernetes-sigs/metrics-server/releases/latest/download/components.yaml}
IMAGES=(order delivery timesale tools)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\n\033[31mdeploy: %s\033[0m\n' "$*" >&2; exit 1; }
log() { info "$*"; }
# run CMD...: print it; execute it unless DRY_RUN=1
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

# --- which cluster ------------------------------------------------------------------------
kind_usable() {
  command -v kind >/dev/null 2>&1 && "$DOCKER" info >/dev/null 2>&1 || return 1
  # kind's node containers are privileged; some hosts (rootless, sandboxes) refuse that
  local img
  img=$("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v '<none>' | head -1)
  [[ -n "$img" ]] || return 0
  "$DOCKER" run --rm --privileged --entrypoint /bin/true "$img" >/dev/null 2>&1 \
    || "$DOCKER" run --rm --privileged "$img" true >/dev/null 2>&1
}
case "${CLUSTER:-}" in
  kind | local) ;;
  "")
    if [[ "$DRY_RUN" == 1 ]] || kind_usable; then CLUSTER=kind; else CLUSTER=local; fi
    info "CLUSTER=$CLUSTER (kind needs the kind command and privileged Docker containers; CLUSTER=kind|local forces one)"
    ;;
  *) die "CLUSTER=$CLUSTER: expected kind or local (the kind cluster's name is KIND_CLUSTER)" ;;
esac
if [[ "$CLUSTER" == local ]]; then
  exec bash "$ROOT/deploy/deploy-local.sh" "$@"
fi
CONTEXT="kind-$KIND_CLUSTER"
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
  # kindnet enforces NetworkPolicies from kind v0.24.0 on; older clusters would ignore the
  # chart's policies silently.
  kind_version=$(kind version | sed -n 's/^kind v\([0-9]*\.[0-9]*\).*/\1/p')
  if [[ -n "$kind_version" ]] && ! awk -v v="$kind_version" 'BEGIN { split(v, a, "."); exit !(a[1] > 0 || a[2] >= 24) }'; then
    die "kind v$kind_version does not enforce NetworkPolicies; install kind v0.24.0 or newer"
  fi
  # CPU: the chart requests ~1.4 CPU at rest; time-sale at maxReplicas (8 x 200m) adds 1.4
  # more. With fewer CPUs the HPA's new pods stay Pending and time-sale cannot scale.
  cpus=$(docker info --format '{{.NCPU}}')
  info "CPUs available to Docker: $cpus (time-sale at 8 replicas needs ~3 CPUs of requests)"
  if ((cpus < 3)); then
    info "warning: with $cpus CPUs time-sale cannot reach its maximum replicas; the HPA will add pods that stay Pending"
  fi
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
step "kind cluster '$KIND_CLUSTER'"
if [[ "$DRY_RUN" != 1 ]] && kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  info "exists; reusing it"
else
  run kind create cluster --name "$KIND_CLUSTER" --config deploy/kind/cluster.yaml --wait 120s
fi
run kubectl config use-context "$CONTEXT"

# --- images -----------------------------------------------------------------------------
# `make images` builds them (public bases when a registry answers, air-gapped ones
# otherwise) and checks their sizes.
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "images (tag $IMAGE_TAG, built for this machine's architecture)"
  run env IMAGE_TAG="$IMAGE_TAG" bash deploy/images.sh
fi
for target in "${IMAGES[@]}"; do
  if [[ "$DRY_RUN" != 1 ]] && ! docker image inspect "cloudmart/$target:$IMAGE_TAG" >/dev/null 2>&1; then
    die "image cloudmart/$target:$IMAGE_TAG is missing: run 'make images' (or drop SKIP_BUILD=1)"
  fi
  # kind load docker-image fails with "content digest not found" under Docker's containerd
  # image store (kind issue 3795); an image archive works everywhere.
  if [[ "$DRY_RUN" == 1 ]]; then
    run kind load docker-image "cloudmart/$target:$IMAGE_TAG" --name "$KIND_CLUSTER"
  elif ! run kind load docker-image "cloudmart/$target:$IMAGE_TAG" --name "$KIND_CLUSTER"; then
    info "kind load docker-image failed; retrying through an image archive"
    archive=$(mktemp "${TMPDIR:-/tmp}/cloudmart-image.XXXXXX")
    run docker save -o "$archive" "cloudmart/$target:$IMAGE_TAG"
    run kind load image-archive "$archive" --name "$KIND_CLUSTER"
    rm -f "$archive"
  fi
done

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
  --wait --wait-for-jobs --timeout 10m)
for target in order delivery timesale; do
  # A rebuilt image under the same tag must roll the pods, and an unchanged one must not:
  # the image id (read from Docker, also with SKIP_BUILD=1) is a pod annotation.
  id=""
  [[ "$DRY_RUN" == 1 ]] || id=$(docker image inspect -f '{{.Id}}' "cloudmart/$target:$IMAGE_TAG" 2>/dev/null || true)
  if [[ -n "$id" ]]; then
    helm_args+=(--set-string "$target.podAnnotations.cloudmart\\.io/image-id=${id#sha256:}")
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
