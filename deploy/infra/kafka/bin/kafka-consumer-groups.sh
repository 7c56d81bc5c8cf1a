#!/usr/bin/env bash
# /opt/kafka/bin/kafka-consumer-groups.sh of cloudmart/airgap-kafka: list, describe and reset consumer groups (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
