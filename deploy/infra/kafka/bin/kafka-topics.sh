#!/usr/bin/env bash
# /opt/kafka/bin/kafka-topics.sh of cloudmart/airgap-kafka: create, describe, alter and list topics (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.TopicCommand "$@"
