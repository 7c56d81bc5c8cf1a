#!/usr/bin/env bash
# /opt/kafka/bin/kafka-console-consumer.sh of cloudmart/airgap-kafka: records of a topic to stdout (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.consumer.ConsoleConsumer "$@"
