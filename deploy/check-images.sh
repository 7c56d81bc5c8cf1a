#!/usr/bin/env bash
# Runs every binary of the four images the way the chart runs them — as uid 65532, read-only
# root filesystem, all capabilities dropped, no-new-privileges, no network — and checks
# that its --help works there; a service image must also refuse a SQLite DATABASE_URL
# with a clear message (it is built without SQLite) rather than crash. CI runs it after
# `make images`. Settings: DOCKER (docker), IMAGE_TAG (dev).
#
# With CHECK_DATABASE_URL (a PostgreSQL database) and CHECK_KAFKA_BROKERS (reachable from
# the host network), the order image also starts for real, hardened, on the host network:
# it must report SERVING over gRPC health (grpcurl) and exit 0 on `docker stop` (SIGTERM).
set -euo pipefail

DOCKER=${DOCKER:-docker}
TAG=${IMAGE_TAG:-dev}
fail=0
hardened=(--rm --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges --network none)

# check LABEL EXIT TEXT DOCKER-RUN-ARGS...: the container must exit with EXIT ("0" or
# "nonzero") and print TEXT.
check() {
  local label=$1 want_exit=$2 want=$3 out rc
  shift 3
  rc=0
  out=$("$DOCKER" run "${hardened[@]}" "$@" 2>&1) || rc=$?
  if { [ "$want_exit" = 0 ] && [ "$rc" = 0 ]; } || { [ "$want_exit" = nonzero ] && [ "$rc" != 0 ] && [ "$rc" -lt 125 ]; }; then
    if grep -q -- "$want" <<<"$out"; then
      printf '  ok    %s\n' "$label"
      return
    fi
  fi
  printf '  FAIL  %s (exit %s, expected %s and %s)\n%s\n' "$label" "$rc" "$want_exit" "$want" "$out" | head -20
  fail=1
}

echo "images: binaries run hardened (uid 65532, read-only root, no capabilities, no network)"
for svc in order delivery timesale; do
  image=cloudmart/$svc:$TAG
  "$DOCKER" image inspect "$image" >/dev/null 2>&1 || { echo "  FAIL  $image: not built (make images)"; fail=1; continue; }
  user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$image")
  [ "$user" = 65532:65532 ] || { echo "  FAIL  $image runs as '$user', not 65532:65532"; fail=1; }
  check "$image --help" 0 "DATABASE_URL" "$image" --help
  # Built without SQLite: a sqlite:// URL is refused at start-up, naming the variable.
  check "$image refuses sqlite://" nonzero "DATABASE_URL is a sqlite:// URL" \
    -e DATABASE_URL=sqlite:///tmp/x.db -e KAFKA_BROKERS=127.0.0.1:1 "$image"
done
image=cloudmart/tools:$TAG
for tool in cloudmart-smoke cloudmart-load cloudmart-audit kubectl-cloudmart; do
  check "$image $tool --help" 0 "Usage" --entrypoint "/usr/local/bin/$tool" "$image" --help
done
if [ -n "${CHECK_DATABASE_URL:-}" ] && [ -n "${CHECK_KAFKA_BROKERS:-}" ]; then
  image=cloudmart/order:$TAG
  grpcurl=$(bash "$(dirname "$0")/../e2e/tools/grpcurl.sh")
  port=$((20000 + RANDOM % 20000))
  name=cloudmart-image-check-$$
  "$DOCKER" run -d --name "$name" --read-only --user 65532:65532 --cap-drop ALL \
    --security-opt no-new-privileges --network host \
    -e DATABASE_URL="$CHECK_DATABASE_URL" -e KAFKA_BROKERS="$CHECK_KAFKA_BROKERS" \
    -e KAFKA_TOPIC_PREFIX="image-check-$$-" -e GRPC_ADDR="127.0.0.1:$port" -e METRICS_ADDR="127.0.0.1:$((port + 1))" \
    "$image" >/dev/null
  serving=0
  for _ in $(seq 1 60); do
    if "$grpcurl" -plaintext -d '{"service":"cloudmart.order.v1.OrderService"}' "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
      serving=1
      break
    fi
    sleep 1
  done
  if [ "$serving" = 1 ]; then
    printf '  ok    %s serves (gRPC health SERVING on PostgreSQL + Kafka, hardened)\n' "$image"
  else
    printf '  FAIL  %s never reported SERVING; its log:\n' "$image"; "$DOCKER" logs "$name" 2>&1 | tail -20
    fail=1
  fi
  "$DOCKER" stop -t 30 "$name" >/dev/null
  code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$name")
  if [ "$code" = 0 ]; then printf '  ok    %s exits 0 on SIGTERM\n' "$image"; else
    printf '  FAIL  %s exited %s on SIGTERM\n' "$image" "$code"; "$DOCKER" logs "$name" 2>&1 | tail -20; fail=1; fi
  "$DOCKER" rm -f "$name" >/dev/null
fi
[ "$fail" = 0 ] || { echo "check-images: FAILED"; exit 1; }
echo "check-images: all binaries run hardened"
