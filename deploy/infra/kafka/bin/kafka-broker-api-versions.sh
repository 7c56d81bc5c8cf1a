#!/usr/bin/env bash
# /opt/kafka/bin/kafka-broker-api-versions.sh of cloudmart/airgap-kafka: API versions each broker supports (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
