#!/bin/sh
# Dependency-caching skeleton for deploy/Dockerfile (cargo-chef style, without cargo-chef):
# copies every Cargo.toml, Cargo.lock and toolchain/config file of the workspace in the
# current directory to DEST, with a stub for every target entry point (lib.rs -> empty,
# anything else -> fn main() {}). Compiling DEST builds every third-party crate; that
# layer changes only when a manifest or the lock file changes. POSIX sh (runs in any base).
set -eu
dest=${1:?usage: skeleton.sh DEST}
mkdir -p "$dest"
cp Cargo.toml Cargo.lock "$dest/"
for f in rust-toolchain rust-toolchain.toml .cargo/config.toml .cargo/config; do
  if [ -f "$f" ]; then mkdir -p "$dest/$(dirname "$f")"; cp "$f" "$dest/$f"; fi
done
stub() {
  mkdir -p "$dest/$(dirname "$1")"
  case "$1" in
    */lib.rs) : >"$dest/$1" ;;
    *) echo 'fn main() {}' >"$dest/$1" ;;
  esac
}
find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml' | while read -r manifest; do
  dir=$(dirname "$manifest")
  mkdir -p "$dest/$dir"
  cp "$manifest" "$dest/$dir/"
  find "$dir" \( -path "$dir/target" -prune \) -o -type f \( \
      -path "$dir/build.rs" -o -path "$dir/src/lib.rs" -o -path "$dir/src/main.rs" \
      -o -path "$dir/src/bin/*.rs" -o -path "$dir/benches/*.rs" -o -path "$dir/tests/*.rs" \
      -o -path "$dir/tests/*/main.rs" -o -path "$dir/examples/*.rs" \) -print | while read -r entry; do
    stub "$entry"
  done
  # entry points declared with an explicit `path = "..."` ([[bin]], [lib], [[test]] ...)
  sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' "$manifest" | while read -r rel; do
    [ -f "$dest/$dir/$rel" ] || stub "$dir/$rel"
  done
done
