#!/usr/bin/env bash
# `make lint-proto` (part of `make lint`; CI runs it): checks the contract in proto/ with
# the tools other teams use on it, not with the workspace's own compiler (protox).
#
#   1. the reference compiler: protoc from PyPI's grpcio-tools (in a venv under the target
#      directory) compiles every .proto, warnings fatal, generating Python stubs;
#   2. buf (npm @bufbuild/buf): `buf build`, `buf lint` (rules and exceptions justified
#      in proto/buf.yaml), `buf format --diff --exit-code`;
#   3. `buf breaking` against the released contract, proto/contract-baseline.json (a buf
#      image of v1), and against the `main` branch when run on another branch: an
#      incompatible change fails unless it goes into a new package version;
#   4. a negative check: a copy of the contract with one field renumbered must be
#      reported as breaking (so step 3 cannot pass by checking nothing).
#
# Environment: CLOUDMART_CACHE (default ~/.cache/cloudmart: buf is installed there with
# npm), CARGO_TARGET_DIR (default target/: the Python venv lives in it), BUF (a buf binary
# to use instead).
# To release a new baseline after a deliberate change in a new package version:
#   buf build proto --exclude-source-info -o proto/contract-baseline.json
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
BUF_VERSION=1.75.0

log() { printf '\n==> %s\n' "$*" >&2; }
ok() { printf '    ok: %s\n' "$*" >&2; }
die() { printf '\nlint-proto: FAILED: %s\n' "$*" >&2; exit 1; }

cd "$ROOT/proto"
protos=()
while IFS= read -r f; do protos+=("$f"); done < <(find cloudmart -name '*.proto' | sort)
[ "${#protos[@]}" -gt 0 ] || die "no .proto files under proto/cloudmart"

# --- 1. protoc (grpcio-tools) --------------------------------------------------------------
venv=$(bash "$ROOT/e2e/pyclient/venv.sh")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
log "protoc $("$venv/bin/python" -m grpc_tools.protoc --version) (grpcio-tools) on ${#protos[@]} files"
"$venv/bin/python" -m grpc_tools.protoc -I. --fatal_warnings \
  --python_out="$out" --grpc_python_out="$out" --descriptor_set_out="$out/contract.binpb" --include_imports \
  "${protos[@]}" || die "protoc refused the contract"
ok "protoc compiled every file and generated Python stubs"

# --- 2. buf ---------------------------------------------------------------------------------
if [ -n "${BUF:-}" ]; then
  buf=$BUF
elif command -v buf >/dev/null; then
  buf=$(command -v buf)
else
  buf=$CACHE/buf-$BUF_VERSION/node_modules/.bin/buf
  if [ ! -x "$buf" ]; then
    command -v npm >/dev/null || die "npm not found: buf is installed from the npm package @bufbuild/buf (or set BUF)"
    log "installing @bufbuild/buf@$BUF_VERSION with npm into $CACHE/buf-$BUF_VERSION"
    mkdir -p "$CACHE/buf-$BUF_VERSION"
    npm install --silent --no-audit --no-fund --prefix "$CACHE/buf-$BUF_VERSION" "@bufbuild/buf@$BUF_VERSION" \
      || die "npm install @bufbuild/buf failed"
  fi
fi
log "buf $("$buf" --version)"
"$buf" build || die "buf build failed"
ok "buf build"
"$buf" lint || die "buf lint (proto/buf.yaml)"
ok "buf lint"
"$buf" format --diff --exit-code || die "buf format: run \`buf format -w proto\`"
ok "buf format"

# --- 3. breaking changes --------------------------------------------------------------------
"$buf" breaking --against contract-baseline.json \
  || die "incompatible with the released contract (proto/contract-baseline.json): put the change in a new package version"
ok "buf breaking against proto/contract-baseline.json"
branch=$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null || echo "")
if [ -n "$branch" ] && [ "$branch" != main ] && git -C "$ROOT" rev-parse --verify -q main >/dev/null; then
  "$buf" breaking --against "$ROOT/.git#branch=main,subdir=proto" || die "incompatible with the contract on main"
  ok "buf breaking against main"
fi

# --- 4. the breaking check can fail ---------------------------------------------------------
broken=$(mktemp -d)
cp -R . "$broken/"
sed -i.orig 's/string customer_id = 2;/string customer_id = 42;/' "$broken/cloudmart/order/v1/order.proto"
if cmp -s "$broken/cloudmart/order/v1/order.proto" "$broken/cloudmart/order/v1/order.proto.orig"; then
  rm -rf "$broken"
  die "negative check: could not renumber a field (order.proto changed shape?)"
fi
rm -f "$broken/cloudmart/order/v1/order.proto.orig"
if (cd "$broken" && "$buf" breaking --against "$ROOT/proto/contract-baseline.json" >/dev/null 2>&1); then
  rm -rf "$broken"
  die "negative check: a renumbered field was not reported as breaking"
fi
rm -rf "$broken"
ok "a renumbered field is reported as breaking"
log "lint-proto: all checks passed"
