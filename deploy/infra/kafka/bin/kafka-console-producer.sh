#!/usr/bin/env bash
# /opt/kafka/bin/kafka-console-producer.sh of cloudmart/airgap-kafka: records from stdin to a topic (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ConsoleProducer "$@"
