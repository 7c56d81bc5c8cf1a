#!/usr/bin/env bash
# `make undeploy`: remove the cloudmart release (the kind cluster stays).
# `make kind-down` (deploy/undeploy.sh --delete-cluster): also delete the kind cluster.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail

CLUSTER=${CLUSTER:-cloudmart}
NAMESPACE=${NAMESPACE:-cloudmart}
RELEASE=${RELEASE:-cloudmart}
DRY_RUN=${DRY_RUN:-0}
CONTEXT="kind-$CLUSTER"

run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

delete_cluster=0
case "${1:-}" in
  "") ;;
  --delete-cluster | kind-down) delete_cluster=1 ;;
  -h | --help) sed -n '2,4p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--delete-cluster]" >&2; exit 2 ;;
esac

if [[ "$delete_cluster" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]] || kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    run kind delete cluster --name "$CLUSTER"
  else
    echo "no kind cluster named $CLUSTER; nothing to do"
  fi
  exit 0
fi

if [[ "$DRY_RUN" != 1 ]] && ! helm status "$RELEASE" --namespace "$NAMESPACE" --kube-context "$CONTEXT" >/dev/null 2>&1; then
  echo "release $RELEASE is not installed in $CONTEXT/$NAMESPACE; nothing to do"
  exit 0
fi
run helm uninstall "$RELEASE" --namespace "$NAMESPACE" --kube-context "$CONTEXT" --wait --timeout 5m
# the topic Job (ttl) and test pod go with the namespace; PVCs, if persistence was on, too
run kubectl --context "$CONTEXT" delete namespace "$NAMESPACE" --ignore-not-found --wait=true
echo "cloudmart removed; the kind cluster '$CLUSTER' is still running (make kind-down deletes it)"
