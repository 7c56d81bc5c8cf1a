#!/usr/bin/env bash
# Jaeger v2 all-in-one without Docker: built once with the Go toolchain from the Go module
# proxy (module github.com/jaegertracing/jaeger, package cmd/jaeger — the v2 binary, pinned
# in deploy/jaeger/go.mod), run with deploy/jaeger/config.yaml (OTLP in, bounded in-memory
# store, UI and query API out).
#
#   bash deploy/jaeger.sh run       # foreground (what `make jaeger` does); Ctrl-C stops it
#   bash deploy/jaeger.sh start     # background, waits until healthy; `stop` ends it
#   bash deploy/jaeger.sh build     # only build; prints the binary's path
#
# Then: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 make dev, and query
# http://127.0.0.1:16686/api/traces?service=order. The Go module has no compiled web UI
# (Jaeger's releases build it with npm), so `/` shows Jaeger's placeholder page; the HTTP
# query API is complete. For the web UI use the Docker image or the chart. Settings (environment): JAEGER_MAX_TRACES (20000),
# JAEGER_LISTEN_HOST (127.0.0.1), JAEGER_QUERY_PORT (16686), JAEGER_OTLP_GRPC_PORT (4317),
# JAEGER_OTLP_HTTP_PORT (4318), JAEGER_HEALTH_PORT (13133), JAEGER_QUERY_GRPC_PORT (16685),
# JAEGER_BIN (use this binary instead of building one).
# Needs: Go (the version deploy/jaeger/go.mod names, or a newer one) for the first build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
version=$(sed -n 's:^[[:space:]]*github.com/jaegertracing/jaeger \(v[0-9.]*\).*:\1:p' "$here/jaeger/go.mod" | head -1)
bin=${JAEGER_BIN:-$cache/bin/jaeger-$version}
host=${JAEGER_LISTEN_HOST:-127.0.0.1}
health_port=${JAEGER_HEALTH_PORT:-13133}
query_port=${JAEGER_QUERY_PORT:-16686}
state=$cache/jaeger
pidfile=$state/jaeger-$query_port.pid
log=$state/jaeger-$query_port.log

say() { printf 'jaeger.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

build() {
  if [ -x "$bin" ]; then return; fi
  command -v go >/dev/null || die "go not found: the Go toolchain builds Jaeger the first time (or set JAEGER_BIN)"
  say "building Jaeger $version (cmd/jaeger) into $bin — a few minutes, once"
  mkdir -p "$(dirname "$bin")"
  (cd "$here/jaeger" && go build -trimpath -ldflags="-s -w" -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) \
    || die "go build of Jaeger failed (is the Go module proxy reachable?)"
  mv "$bin.tmp" "$bin"
}

healthy() {
  (exec 3<>"/dev/tcp/$host/$health_port" && printf 'GET /status HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200') 2>/dev/null
}

running_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  local pid i
  if pid=$(running_pid); then say "already running (pid $pid)"; return; fi
  build
  mkdir -p "$state"
  say "starting Jaeger $version: OTLP gRPC $host:${JAEGER_OTLP_GRPC_PORT:-4317}, UI/API http://$host:$query_port, log $log"
  nohup "$bin" --config "file:$here/jaeger/config.yaml" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for i in $(seq 1 120); do
    if healthy; then say "ready after $((i / 4)) s"; return; fi
    if ! running_pid >/dev/null; then tail -n 30 "$log" >&2; die "Jaeger exited during start-up"; fi
    sleep 0.25
  done
  tail -n 30 "$log" >&2
  die "Jaeger did not become healthy within 30 s"
}

stop() {
  local pid i
  if ! pid=$(running_pid); then say "not running"; rm -f "$pidfile"; return; fi
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return; }
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  build) build; echo "$bin" ;;
  start) start ;;
  stop) stop ;;
  status) if pid=$(running_pid) && healthy; then echo "running (pid $pid), UI http://$host:$query_port"; else echo "not running"; exit 1; fi ;;
  run)
    build
    say "Jaeger $version: send OTLP to http://$host:${JAEGER_OTLP_GRPC_PORT:-4317}, query API http://localhost:$query_port/api/traces?service=order (no web UI in a Go build; Ctrl-C stops)"
    exec "$bin" --config "file:$here/jaeger/config.yaml" ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 run|start|stop|status|build|help" ;;
esac
