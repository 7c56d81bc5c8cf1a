#!/usr/bin/env bash
# /opt/kafka/bin/kafka-get-offsets.sh of cloudmart/airgap-kafka: offsets of topic partitions (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.GetOffsetShell "$@"
