#!/usr/bin/env bash
# /opt/kafka/bin/kafka-configs.sh of cloudmart/airgap-kafka: describe and alter dynamic configuration (see kafka-run-class.sh).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.admin.ConfigCommand "$@"
