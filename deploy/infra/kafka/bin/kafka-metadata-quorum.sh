#!/usr/bin/env bash
# /opt/kafka/bin/kafka-metadata-quorum.sh of cloudmart/airgap-kafka: KRaft quorum status (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.MetadataQuorumCommand "$@"
