#!/usr/bin/env bash
# /opt/kafka/bin/kafka-server-start.sh of cloudmart/airgap-kafka (see kafka-run-class.sh):
# the broker/controller (kafka.Kafka) with the server's logging configuration, a 1 GiB
# heap unless KAFKA_HEAP_OPTS says otherwise, and a GC log, as in the distribution.
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
  exit 1
fi
base_dir=$(cd "$(dirname "$0")" && pwd)

export KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base_dir/../config/log4j2.yaml}
export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}

extra=(-name kafkaServer -loggc)
if [ "$1" = -daemon ]; then
  extra=(-daemon "${extra[@]}")
  shift
fi
exec "$base_dir/kafka-run-class.sh" "${extra[@]}" kafka.Kafka "$@"
