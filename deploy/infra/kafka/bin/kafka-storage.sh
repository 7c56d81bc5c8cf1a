#!/usr/bin/env bash
# /opt/kafka/bin/kafka-storage.sh of cloudmart/airgap-kafka: format KRaft log directories, random-uuid, info (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.StorageTool "$@"
