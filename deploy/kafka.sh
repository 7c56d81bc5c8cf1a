#!/usr/bin/env bash
# Apache Kafka on loopback, without Docker: a single-node KRaft cluster (one process that
# is broker and controller) resolved from Maven Central. Used by CI and for running the
# test suite against a real broker locally:
#
#   bash deploy/kafka.sh start      # resolve (once), format (once), start, wait until it answers
#   TEST_KAFKA_BROKERS=127.0.0.1:9092 TEST_DATABASE_URL=postgres://… make test
#   bash deploy/kafka.sh stop       # SIGTERM, wait for a clean shutdown
#
# Other commands: `run` (foreground), `status`, `restart`, `reset` (stop and delete the
# data), `jars` (resolve only). The log directory persists across restarts, so a broker
# restart keeps every topic, record and committed offset (the chaos tests rely on it).
#
# Settings (environment):
#   KAFKA_VERSION     org.apache.kafka:kafka_2.13 version        (default: the pom's)
#   KAFKA_PORT        client listener on 127.0.0.1               (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener              (default 9093)
#   KAFKA_HOME_DIR    jars, config, data and logs                 (default $CLOUDMART_CACHE/kafka)
#   KAFKA_HEAP        JVM heap                                    (default 512m)
# Needs: Java 17+, Maven (only for the first resolve).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${CLOUDMART_CACHE:-$HOME/.cache/cloudmart}
home=${KAFKA_HOME_DIR:-$cache/kafka}
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
heap=${KAFKA_HEAP:-512m}
version=${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")}
jars=$home/jars-$version
data=$home/data-$port
logs=$home/logs-$port
conf=$home/conf-$port
pidfile=$home/kafka-$port.pid

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_java() {
  command -v java >/dev/null || die "java not found: install a Java 17+ runtime (Debian: openjdk-17-jre-headless)"
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ "${major:-0}" -ge 17 ] || die "Java $major found; Kafka $version needs Java 17 or newer"
}

resolve_jars() {
  if [ -f "$jars/.complete" ]; then return; fi
  command -v mvn >/dev/null || die "mvn not found: Maven resolves the broker from Maven Central the first time"
  say "resolving org.apache.kafka:kafka_2.13:$version and its runtime dependencies into $jars"
  rm -rf "$jars"
  mkdir -p "$jars"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$version" -DincludeScope=runtime -DoutputDirectory="$jars" \
    || die "mvn could not resolve Kafka $version (is Maven Central reachable?)"
  touch "$jars/.complete"
}

write_config() {
  mkdir -p "$conf" "$logs"
  # Single node: replication factors 1; no rebalance delay (tests join groups constantly);
  # topics auto-created as the services' admin client would create them (3 partitions).
  cat >"$conf/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=16777216
log.retention.hours=24
EOF
  cat >"$conf/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $logs/server.log
appender.file.filePattern = $logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

jvm=()
jvm_args() {
  # shellcheck disable=SC2206 # word splitting of KAFKA_JVM_OPTS is intended
  jvm=(-Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$conf/log4j2.properties" ${KAFKA_JVM_OPTS:-} -cp "$jars/*")
}

java_cmd() { jvm_args; java "${jvm[@]}" "$@"; }

format_once() {
  if [ -f "$data/meta.properties" ]; then return; fi
  local id
  id=$(java_cmd kafka.tools.StorageTool random-uuid | tail -1)
  say "formatting KRaft log directory $data (cluster $id)"
  java_cmd kafka.tools.StorageTool format -t "$id" -c "$conf/server.properties" >"$logs/format.log" 2>&1 \
    || { cat "$logs/format.log" >&2; die "formatting $data failed"; }
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

running_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

prepare() {
  need_java
  resolve_jars
  write_config
  format_once
}

start() {
  if pid=$(running_pid); then say "already running (pid $pid) on 127.0.0.1:$port"; return; fi
  if answers; then die "127.0.0.1:$port is taken by another process; set KAFKA_PORT"; fi
  prepare
  say "starting Apache Kafka $version on 127.0.0.1:$port (heap $heap, log $logs/server.log)"
  jvm_args
  nohup java "${jvm[@]}" kafka.Kafka "$conf/server.properties" >"$logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local i
  for i in $(seq 1 240); do
    if answers && grep -q "Kafka Server started" "$logs/server.log" 2>/dev/null; then
      say "ready after $((i / 4)) s"
      return
    fi
    if ! running_pid >/dev/null; then
      tail -n 40 "$logs/stdout.log" "$logs/server.log" >&2 2>/dev/null || true
      die "the broker exited during start-up"
    fi
    sleep 0.25
  done
  tail -n 40 "$logs/server.log" >&2 || true
  die "the broker did not become ready within 60 s"
}

stop() {
  local pid i
  if ! pid=$(running_pid); then say "not running"; rm -f "$pidfile"; return; fi
  say "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return; }
    sleep 0.25
  done
  say "no clean shutdown after 30 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  run) prepare; jvm_args; exec java "${jvm[@]}" kafka.Kafka "$conf/server.properties" ;;
  status)
    if pid=$(running_pid); then echo "running (pid $pid) on 127.0.0.1:$port, data $data"; else echo "not running"; exit 1; fi ;;
  reset) stop; rm -rf "$data" "$logs"; say "data deleted" ;;
  jars) need_java; resolve_jars; echo "$jars" ;;
  -h | --help | help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "usage: $0 start|stop|restart|run|status|reset|jars|help" ;;
esac
