#!/usr/bin/env bash
# /opt/kafka/bin/kafka-run-class.sh of cloudmart/airgap-kafka. The Maven Central jars this
# image is built from carry no bin/ scripts, so this is a small re-implementation of the
# distribution's launcher, honouring the same environment:
#
#   KAFKA_HEAP_OPTS             default -Xmx256M
#   KAFKA_JVM_PERFORMANCE_OPTS  default G1 flags, as in the distribution
#   KAFKA_GC_LOG_OPTS           with -loggc (default: rotating GC log in $LOG_DIR)
#   KAFKA_JMX_OPTS, JMX_PORT    default: local JMX agent, remote on JMX_PORT if set
#   KAFKA_LOG4J_OPTS            default: /opt/kafka/config/tools-log4j2.yaml (WARN, stderr)
#   KAFKA_OPTS, CLASSPATH       appended / prepended as given
#   LOG_DIR                     default /opt/kafka/logs; passed as -Dkafka.logs.dir
#   JAVA_HOME                   else `java` from PATH
#
# Usage: kafka-run-class.sh [-daemon] [-name NAME] [-loggc] CLASS [ARGS...]
# Nothing is written outside $LOG_DIR (and the JVM's own files under /tmp).

base_dir=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]" >&2
  exit 1
}

daemon=false
name=""
loggc=false
while [ $# -gt 0 ]; do
  case $1 in
    -name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
    -loggc) loggc=true; shift ;;
    -daemon) daemon=true; shift ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage

LOG_DIR=${LOG_DIR:-$base_dir/logs}
if [ ! -d "$LOG_DIR" ]; then mkdir -p "$LOG_DIR"; fi

classpath="$base_dir/libs/*"
if [ -n "${CLASSPATH:-}" ]; then classpath="$CLASSPATH:$classpath"; fi

if [ -n "${JAVA_HOME:-}" ]; then java="$JAVA_HOME/bin/java"; else java=java; fi

heap_opts=${KAFKA_HEAP_OPTS:--Xmx256M}
perf_opts=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}
log4j_opts="-Dkafka.logs.dir=$LOG_DIR ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml}"

jmx_opts=${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false}
if [ -n "${JMX_PORT:-}" ]; then
  jmx_opts="$jmx_opts -Dcom.sun.management.jmxremote.port=$JMX_PORT"
  case $jmx_opts in
    *-Dcom.sun.management.jmxremote.rmi.port=*) ;;
    *) jmx_opts="$jmx_opts -Dcom.sun.management.jmxremote.rmi.port=$JMX_PORT" ;;
  esac
fi

gc_opts=""
if [ "$loggc" = true ] && [ -n "$name" ]; then
  gc_opts=${KAFKA_GC_LOG_OPTS:--Xlog:gc*:file=$LOG_DIR/$name-gc.log:time,tags:filecount=10,filesize=100M}
fi

# The option strings are word-split on purpose, as the distribution's script does.
# shellcheck disable=SC2086
if [ "$daemon" = true ]; then
  out="$LOG_DIR/${name:-kafka}.out"
  nohup "$java" $heap_opts $perf_opts $gc_opts $jmx_opts $log4j_opts -cp "$classpath" ${KAFKA_OPTS:-} "$@" >"$out" 2>&1 </dev/null &
else
  exec "$java" $heap_opts $perf_opts $gc_opts $jmx_opts $log4j_opts -cp "$classpath" ${KAFKA_OPTS:-} "$@"
fi
