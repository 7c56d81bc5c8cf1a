#!/usr/bin/env bash
# Builds, without a container registry, local stand-ins for the three third-party images
# the Helm chart (charts/cloudmart) runs, so that its templates run them unchanged — same
# command (none), environment, user ids, read-only root filesystem and mount paths:
#
#   cloudmart/airgap-kafka:<T>         for apache/kafka:<T>, T = kafka.image.tag of the
#       chart's values.yaml. Debian bookworm (debootstrap minbase) + openjdk-17-jre-headless,
#       the Kafka <T> jars from Maven Central (deploy/kafka/pom.xml, as deploy/kafka.sh
#       resolves them, plus kafka-tools), /opt/kafka/bin scripts and the image's
#       /etc/kafka/docker/run from deploy/infra/kafka: KAFKA_* variables become
#       server.properties through kafka.docker.KafkaDockerWrapper (shipped in the jar), the
#       log directories are formatted with CLUSTER_ID, the broker starts; uid 1000.
#   cloudmart/airgap-postgres:15-bookworm  for postgres:17-alpine: Debian's postgresql-15
#       (bookworm has no 17), postgres user renumbered to uid/gid 70, the official image's
#       docker-entrypoint.sh contract (POSTGRES_USER/PASSWORD/DB, PGDATA,
#       /docker-entrypoint-initdb.d) from deploy/infra/postgres.
#   cloudmart/airgap-jaeger:<J>        for jaegertracing/jaeger: the Jaeger v2 binary that
#       `deploy/jaeger.sh build` compiles from the Go module pinned in deploy/jaeger/go.mod,
#       on cloudmart/airgap-runtime (deploy/airgap-bases.sh); J is the v2 release that
#       module version corresponds to (read from the module's CHANGELOG.md).
#
#   bash deploy/airgap-infra.sh [kafka] [postgres] [jaeger]    # default: all three
#
# Prints one line per image at the end: "name<TAB>size MiB". Existing images are reused;
# FORCE=1 rebuilds them. The debootstrap results are cached as tars under
# $CLOUDMART_CACHE/airgap (default ~/.cache/cloudmart/airgap; delete them to re-fetch), the
# Kafka jars under $CLOUDMART_CACHE/kafka. Settings: DOCKER (/usr/bin/docker),
# DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian).
# Needs docker; for a first build also root (debootstrap), debootstrap, Maven (Kafka jars),
# unzip, and Go (Jaeger). Only the host reaches Debian's mirror, Maven Central and the Go
# module proxy; nothing inside a build needs the network.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
INFRA=$ROOT/deploy/infra
DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
RUNTIME_IMAGE=cloudmart/airgap-runtime:$SUITE

say() { printf 'airgap-infra: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source=deploy/docker-builder.sh
. "$ROOT/deploy/docker-builder.sh"

have_image() { [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

command -v "$DOCKER" >/dev/null || die "$DOCKER not found (Debian: apt-get install docker.io; or set DOCKER)"
"$DOCKER" info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/cloudmart-airgap-infra.XXXXXX")
cleanup() {
  # a failed debootstrap can leave /proc, /sys or /dev mounted inside its target
  local m
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts 2>/dev/null | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# <section>.image.<key> from the chart's values.yaml (two-space indentation)
chart_image_value() {
  awk -v sec="$1" -v key="$2" '
    /^[^ #]/ { top = $1; sub(/:$/, "", top); img = 0; next }
    top != sec { next }
    /^  image:/ { img = 1; next }
    /^  [^ ]/ { img = 0 }
    img && $1 == key ":" { v = $2; gsub(/"/, "", v); print v; exit }
  ' "$ROOT/charts/cloudmart/values.yaml"
}

# --- Debian root filesystems ------------------------------------------------------------------
# Docs (but not copyright files), man pages, translations, apt caches and logs go; the
# host's resolv.conf and hostname, which debootstrap copies in, are emptied.
slim_rootfs() {
  local r=$1
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
    "$r"/usr/share/man "$r"/usr/share/info "$r"/usr/share/lintian "$r"/var/cache/debconf/*-old \
    "$r"/var/lib/dpkg/*-old
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  find "$r/var/log" -type f -delete
  : >"$r/etc/resolv.conf"
  : >"$r/etc/hostname"
}

# debootstrap_tar NAME PACKAGES: path of a cached tar of `debootstrap --variant=minbase
# --include=PACKAGES` (made once; the name carries a hash of suite and package list)
debootstrap_tar() {
  local name=$1 include=$2 key tar root
  key=$(printf '%s %s\n' "$SUITE" "$include" | sha256sum | cut -c1-12)
  tar=$CACHE/airgap/debootstrap-$SUITE-$name-$key.tar
  if [ ! -f "$tar" ]; then
    command -v debootstrap >/dev/null || die "debootstrap not found (Debian: apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (once; the result is cached as $tar)"
    root=$work/$name-debootstrap
    mkdir -p "$root" "$work/debs" "$(dirname "$tar")"
    say "debootstrap --variant=minbase --include=$include $SUITE (once; cached as $tar)"
    debootstrap --variant=minbase --include="$include" --cache-dir="$work/debs" \
      "$SUITE" "$root" "$MIRROR" >"$work/debootstrap-$name.log" 2>&1 \
      || { tail -20 "$work/debootstrap-$name.log" >&2; die "debootstrap failed"; }
    slim_rootfs "$root"
    tar -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf --one-file-system "$root"
  fi
  echo "$tar"
}

# link (or copy) FILE into DIR
place() { ln -f "$1" "$2/" 2>/dev/null || cp "$1" "$2/"; }

# docker_build NAME TAG CONTEXT [docker build args…]
docker_build() {
  local name=$1 tag=$2 ctx=$3 old new
  shift 3
  old=$("$DOCKER" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  say "building $tag"
  "$DOCKER" build --progress=plain "$@" -t "$tag" "$ctx" >"$work/build-$name.log" 2>&1 \
    || { tail -30 "$work/build-$name.log" >&2; die "docker build of $tag failed (log above)"; }
  # a rebuild (FORCE=1) leaves no dangling predecessor behind (unless a container uses it)
  new=$("$DOCKER" image inspect -f '{{.Id}}' "$tag")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then "$DOCKER" image rm "$old" >/dev/null 2>&1 || true; fi
}

# --- Kafka --------------------------------------------------------------------------------------
KAFKA_VERSION=$(chart_image_value kafka tag)
[ -n "$KAFKA_VERSION" ] || die "kafka.image.tag not found in charts/cloudmart/values.yaml"
KAFKA_TAG=cloudmart/airgap-kafka:$KAFKA_VERSION

# The broker's jars exactly as deploy/kafka.sh resolves them (same directory and marker, so
# either script reuses the other's download), plus kafka-tools for kafka-topics.sh & co.:
# its classes only — what they need at run time is already among the broker's dependencies.
kafka_jars() {
  local v=$KAFKA_VERSION jars=$CACHE/kafka/jars-$KAFKA_VERSION tools=$CACHE/kafka/tools-$KAFKA_VERSION
  if [ ! -f "$jars/.complete" ] || [ ! -f "$tools/.complete" ]; then
    command -v mvn >/dev/null || die "mvn not found: Maven resolves Kafka $v from Maven Central the first time"
  fi
  if [ ! -f "$jars/.complete" ]; then
    say "resolving org.apache.kafka:kafka_2.13:$v and its runtime dependencies into $jars"
    rm -rf "$jars"
    mkdir -p "$jars"
    mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
      -Dkafka.version="$v" -DincludeScope=runtime -DoutputDirectory="$jars" >"$work/mvn.log" 2>&1 \
      || { tail -20 "$work/mvn.log" >&2; die "mvn could not resolve Kafka $v (is Maven Central reachable?)"; }
    touch "$jars/.complete"
  fi
  if [ ! -f "$tools/.complete" ]; then
    say "resolving org.apache.kafka:kafka-tools:$v into $tools"
    rm -rf "$tools"
    mkdir -p "$tools"
    (cd "$work" && mvn -q -B dependency:copy -Dartifact="org.apache.kafka:kafka-tools:$v" \
      -DoutputDirectory="$tools" >"$work/mvn.log" 2>&1) \
      || { tail -20 "$work/mvn.log" >&2; die "mvn could not resolve kafka-tools $v"; }
    touch "$tools/.complete"
  fi
  command -v unzip >/dev/null || die "unzip not found (Debian: apt-get install unzip)"
  unzip -l "$jars/kafka_2.13-$v.jar" kafka/docker/KafkaDockerWrapper.class >/dev/null 2>&1 \
    || die "kafka_2.13-$v.jar has no kafka.docker.KafkaDockerWrapper (Kafka 3.7 or newer needed)"
  unzip -l "$tools/kafka-tools-$v.jar" org/apache/kafka/tools/TopicCommand.class >/dev/null 2>&1 \
    || die "kafka-tools-$v.jar has no org.apache.kafka.tools.TopicCommand"
  printf '%s\n%s\n' "$jars" "$tools"
}

build_kafka() {
  local ctx=$work/kafka-ctx rootfs dirs dir
  mkdir -p "$ctx/libs"
  dirs=$(kafka_jars)
  for dir in $dirs; do
    cp "$dir"/*.jar "$ctx/libs/"
  done
  rootfs=$(debootstrap_tar kafka openjdk-17-jre-headless)
  place "$rootfs" "$ctx"
  mv "$ctx/$(basename "$rootfs")" "$ctx/rootfs.tar"
  cp -R "$INFRA/kafka/Dockerfile" "$INFRA/kafka/run" "$INFRA/kafka/bin" "$INFRA/kafka/config" "$ctx/"
  chmod 0755 "$ctx/run" "$ctx"/bin/*.sh
  chmod 0644 "$ctx"/config/* "$ctx"/libs/*.jar
  docker_build kafka "$KAFKA_TAG" "$ctx" --build-arg KAFKA_VERSION="$KAFKA_VERSION"
}

# --- PostgreSQL ---------------------------------------------------------------------------------
PG_TAG=cloudmart/airgap-postgres:15-$SUITE

build_postgres() {
  local ctx=$work/postgres-ctx root=$work/postgres-root rootfs pg_version
  mkdir -p "$ctx" "$root"
  rootfs=$(debootstrap_tar postgres postgresql-15)
  tar -C "$root" -xf "$rootfs"
  # The cluster the package's postinst created, the LLVM JIT (libLLVM and libz3 are ~130
  # MB; PostgreSQL quietly runs without JIT when its provider is absent), locale sources
  # (the image uses C.UTF-8) and the snakeoil key ssl-cert generated go.
  rm -rf "$root"/etc/postgresql/15/main "$root"/var/lib/postgresql/15 "$root"/var/log/postgresql/* \
    "$root"/usr/share/postgresql/15/man "$root"/usr/share/i18n \
    "$root"/usr/lib/postgresql/15/lib/bitcode "$root"/usr/lib/postgresql/15/lib/llvmjit*.so \
    "$root"/etc/ssl/private/ssl-cert-snakeoil.key "$root"/etc/ssl/certs/ssl-cert-snakeoil.pem
  local list f
  for list in "$root"/var/lib/dpkg/info/libllvm14*.list "$root"/var/lib/dpkg/info/libz3-4*.list; do
    [ -f "$list" ] || continue
    while read -r f; do
      if [ -f "$root$f" ] || [ -L "$root$f" ]; then rm -f "$root$f"; fi
    done <"$list"
  done
  pg_version=$(awk '/^Package: postgresql-15$/ { p = 1 } p && /^Version:/ { sub(/-.*/, "", $2); print $2; exit }' "$root/var/lib/dpkg/status")
  [ -n "$pg_version" ] || die "postgresql-15 is not installed in the root filesystem"
  tar -C "$root" -cf "$ctx/rootfs.tar" .
  rm -rf --one-file-system "$root"
  cp "$INFRA/postgres/Dockerfile" "$INFRA/postgres/docker-entrypoint.sh" "$ctx/"
  chmod 0755 "$ctx/docker-entrypoint.sh"
  docker_build postgres "$PG_TAG" "$ctx" --build-arg PG_VERSION="$pg_version"
}

# --- Jaeger -------------------------------------------------------------------------------------
# The Jaeger module's tags are v1.x.y; each release pairs them with a v2 version, which is
# what the jaegertracing/jaeger (v2) image is tagged with: "v1.74.0 / v2.11.0 (date)".
jaeger_module=$(sed -n 's:^[[:space:]]*github.com/jaegertracing/jaeger \(v[0-9.]*\).*:\1:p' "$ROOT/deploy/jaeger/go.mod" | head -1)
[ -n "$jaeger_module" ] || die "github.com/jaegertracing/jaeger not found in deploy/jaeger/go.mod"
jaeger_src="" JAEGER_VERSION="" JAEGER_TAG=""
jaeger_version() {
  command -v go >/dev/null || die "go not found: the Go toolchain fetches and builds Jaeger"
  jaeger_src=$(cd "$ROOT/deploy/jaeger" && go mod download -json github.com/jaegertracing/jaeger \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$jaeger_src/CHANGELOG.md" ] || die "the Jaeger $jaeger_module module source is not in the Go module cache"
  JAEGER_VERSION=$(sed -n "s:^${jaeger_module//./\\.} / v\(2\.[0-9.]*\) .*:\1:p" "$jaeger_src/CHANGELOG.md" | head -1)
  if [ -z "$JAEGER_VERSION" ]; then
    # a release's CHANGELOG lists the releases before it, not itself (v1.75.0's newest entry
    # is "v1.74.0 / v2.11.0"): the v1 and v2 minors move together, so take the newest pair's
    # offset (63 since v1.67.0 / v2.4.0)
    local pair v1 v2 want
    pair=$(sed -n 's:^v1\.\([0-9]*\)\.0 / v2\.\([0-9]*\)\.0 .*:\1 \2:p' "$jaeger_src/CHANGELOG.md" | head -1)
    v1=${pair% *} v2=${pair#* } want=${jaeger_module#v1.}
    want=${want%%.*}
    { [ -n "$pair" ] && [ "${jaeger_module##*.}" = 0 ]; } || die "no v2 release paired with $jaeger_module in the Jaeger CHANGELOG.md"
    JAEGER_VERSION=2.$((want - v1 + v2)).0
    say "Jaeger $jaeger_module: v2 release $JAEGER_VERSION (from the CHANGELOG's newest pair v1.$v1.0 / v2.$v2.0)"
  fi
  JAEGER_TAG=cloudmart/airgap-jaeger:$JAEGER_VERSION
}

build_jaeger() {
  local ctx=$work/jaeger-ctx bin lib
  mkdir -p "$ctx"
  bin=$(bash "$ROOT/deploy/jaeger.sh" build)
  [ -x "$bin" ] || die "deploy/jaeger.sh build printed no binary"
  # the runtime base has glibc and nothing else
  for lib in $(ldd "$bin" 2>/dev/null | awk '{ print $1 }'); do
    case $lib in
      linux-vdso.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | libresolv.so.* | /lib*/ld-linux*) ;;
      *) die "$bin needs $lib, which $RUNTIME_IMAGE lacks" ;;
    esac
  done
  if ! "$DOCKER" image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1; then
    say "$RUNTIME_IMAGE missing: building it with deploy/airgap-bases.sh"
    DOCKER=$DOCKER bash "$ROOT/deploy/airgap-bases.sh" >/dev/null
  fi
  place "$bin" "$ctx"
  mv "$ctx/$(basename "$bin")" "$ctx/jaeger-linux"
  cp "$jaeger_src/cmd/jaeger/sampling-strategies.json" "$INFRA/jaeger/Dockerfile" "$ctx/"
  chmod 0644 "$ctx/sampling-strategies.json"
  docker_build jaeger "$JAEGER_TAG" "$ctx" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" --build-arg JAEGER_VERSION="$JAEGER_VERSION"
}

# --- main ---------------------------------------------------------------------------------------
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(kafka postgres jaeger)
tags=()
for what in "${wanted[@]}"; do
  case $what in
    kafka) tag=$KAFKA_TAG ;;
    postgres) tag=$PG_TAG ;;
    jaeger)
      jaeger_version
      tag=$JAEGER_TAG
      chart_tag=$(chart_image_value jaeger tag)
      if [ "$JAEGER_VERSION" != "$chart_tag" ]; then
        say "note: Jaeger $jaeger_module is v2 release $JAEGER_VERSION; the chart's jaeger.image.tag is $chart_tag"
      fi
      ;;
    *) die "usage: $0 [kafka] [postgres] [jaeger]" ;;
  esac
  if have_image "$tag"; then say "$tag present"; else "build_$what"; fi
  tags+=("$tag")
done

say "done in $(($(date +%s) - started)) s"
for tag in "${tags[@]}"; do
  printf '%s\t%s MiB\n' "$tag" "$(($("$DOCKER" image inspect -f '{{.Size}}' "$tag") / 1048576))"
done
