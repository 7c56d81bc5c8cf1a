#!/usr/bin/env bash
# Creates (once) the Python venv for the generated-client test and `make lint-proto`, under
# the target directory ($CARGO_TARGET_DIR or target/), with e2e/pyclient/requirements.txt;
# prints its path. Re-created when the requirements change.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${PYCLIENT_VENV:-${CARGO_TARGET_DIR:-$root/target}/pyclient-venv}
req=$here/requirements.txt
command -v python3 >/dev/null || { echo "venv.sh: python3 not found" >&2; exit 3; }
stamp=$(cksum <"$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
  echo "venv.sh: creating $venv (grpcio-tools, grpcio-status from PyPI)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 || { echo "venv.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$stamp" >"$venv/.requirements"
fi
echo "$venv"
