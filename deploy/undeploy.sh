#!/usr/bin/env bash
# `make undeploy`: remove the Helm release and its namespace; the cluster stays.
# `make kind-down` (deploy/undeploy.sh --delete-cluster): also delete the kind cluster
# (the local cluster of `make cluster` goes with `make cluster-down`).
# Which cluster: CLUSTER=kind|local; by default the one whose context answers (local's
# cloudmart-local first, then kind-$KIND_CLUSTER). DRY_RUN=1 prints the commands.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIND_CLUSTER=${KIND_CLUSTER:-cloudmart}
NAMESPACE=${NAMESPACE:-cloudmart}
RELEASE=${RELEASE:-cloudmart}
DRY_RUN=${DRY_RUN:-0}

log() { printf '    %s\n' "$*" >&2; }
die() { printf 'undeploy: %s\n' "$*" >&2; exit 1; }
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}
TOOLS=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}/k8s-tools
# shellcheck source=deploy/k8s-tools.sh
. "$ROOT/deploy/k8s-tools.sh"
if [[ "$DRY_RUN" == 1 ]]; then HELM=${HELM:-helm}; KUBECTL=${KUBECTL:-kubectl}; else
  HELM=$(pick_tool helm "${HELM:-}"); KUBECTL=$(pick_tool kubectl "${KUBECTL:-}"); fi

delete_cluster=0
case "${1:-}" in
  "") ;;
  --delete-cluster | kind-down) delete_cluster=1 ;;
  -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--delete-cluster]" >&2; exit 2 ;;
esac

if [[ "$delete_cluster" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]] || kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    run kind delete cluster --name "$KIND_CLUSTER"
  else
    echo "no kind cluster named $KIND_CLUSTER; nothing to do"
  fi
  exit 0
fi

case "${CLUSTER:-}" in
  local) CONTEXT=cloudmart-local ;;
  kind) CONTEXT="kind-$KIND_CLUSTER" ;;
  "")
    if [[ "$DRY_RUN" != 1 ]] && "$KUBECTL" --context cloudmart-local get --raw /readyz >/dev/null 2>&1; then
      CONTEXT=cloudmart-local
    else CONTEXT="kind-$KIND_CLUSTER"; fi ;;
  *) die "CLUSTER=$CLUSTER: expected kind or local" ;;
esac

if [[ "$DRY_RUN" != 1 ]] && ! "$HELM" status "$RELEASE" --namespace "$NAMESPACE" --kube-context "$CONTEXT" >/dev/null 2>&1; then
  echo "release $RELEASE is not installed in $CONTEXT/$NAMESPACE; nothing to do"
  exit 0
fi
run "$HELM" uninstall "$RELEASE" --namespace "$NAMESPACE" --kube-context "$CONTEXT" --wait --timeout 5m
run "$KUBECTL" --context "$CONTEXT" delete namespace "$NAMESPACE" --ignore-not-found --wait=true
echo "cloudmart removed from $CONTEXT; the cluster is still running (make cluster-down / make kind-down removes it)"
