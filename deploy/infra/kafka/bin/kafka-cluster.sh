#!/usr/bin/env bash
# /opt/kafka/bin/kafka-cluster.sh of cloudmart/airgap-kafka: cluster id, endpoints, unregister (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ClusterTool "$@"
