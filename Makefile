# cloudmart — every entry point. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
CARGO_FLAGS ?= --locked
# Tests and e2e run release binaries as real processes; one profile builds once.
PROFILE ?= release

.DEFAULT_GOAL := help
.PHONY: help dev test test-unit build lint lint-charts lint-proto images rehearse chaos bench-scale fmt cluster cluster-down deploy undeploy kind-down e2e-cluster load bench bench-report bench-hot-sale smoke jaeger kafka clean

help: ## List the make targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# make dev builds exactly what make build (and so make test) builds — the same cargo
# command, so the same feature set: after one of them the other compiles nothing.
dev: build ## Run the whole shop locally: SQLite + in-process Kafka-protocol broker (Ctrl-C stops)
	$${CARGO_TARGET_DIR:-target}/$(PROFILE)/cloudmart-dev $(ARGS)

build: ## Build every binary (release)
	$(CARGO) build $(CARGO_FLAGS) --profile $(PROFILE) --bins

test: build ## Full test suite: unit, integration, end-to-end (TEST_DATABASE_URL / TEST_KAFKA_BROKERS pick real backends)
	@CARGO="$(CARGO)" python3 deploy/test-run.py $(CARGO_FLAGS) --profile $(PROFILE) --workspace --exclude cloudmart-e2e-cluster

test-unit: ## Fast unit tests only (no processes)
	$(CARGO) test $(CARGO_FLAGS) --workspace --lib

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## cargo fmt --check, clippy -D warnings, chart checks, contract checks (protoc + buf)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	$(MAKE) lint-charts
	$(MAKE) lint-proto

lint-proto: ## The contract through outside tools: protoc (grpcio-tools), buf build/lint/format/breaking
	bash deploy/lint-proto.sh

lint-charts: ## helm lint/template, schema validation (2 Kubernetes versions), manifest tests
	bash deploy/lint-charts.sh

cluster: ## A real single-node Kubernetes on this host, no kind (root, Linux; context cloudmart-local)
	bash deploy/cluster.sh up

cluster-down: ## Stop the local cluster and check nothing of it is left (processes, mounts, cni0, iptables, sysctls)
	bash deploy/cluster.sh down

deploy: ## Helm install on kind (Docker, privileged) or else the local cluster (CLUSTER=kind|local), then helm test
	bash deploy/deploy.sh

undeploy: ## Remove the Helm release (the cluster stays)
	bash deploy/undeploy.sh

kind-down: ## Delete the kind cluster
	bash deploy/undeploy.sh --delete-cluster

# The same cargo command shapes as make build / make test (whole workspace), so nothing
# they built is compiled again with another feature set.
e2e-cluster: build ## The cluster suite against the current kube context: saga, compensation, rush + real HPA, pod kill, trace
	KUBECTL_CLOUDMART=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/$(PROFILE)/kubectl-cloudmart \
	  KUBECTL=$${KUBECTL:-$$(bash deploy/k8s-tools.sh kubectl)} HELM=$${HELM:-$$(bash deploy/k8s-tools.sh helm)} \
	  $(CARGO) test $(CARGO_FLAGS) --profile $(PROFILE) --workspace --test cluster -- --test-threads 1 --nocapture

load: ## The rush from kubectl (kubectl cloudmart load --expect-scale timesale) on the current cluster, with report and verdict
	bash deploy/load.sh

smoke: ## Send one order through a running system (ORDER_ENDPOINT, default http://127.0.0.1:50051)
	$(CARGO) run $(CARGO_FLAGS) --release -p cloudmart-e2e --bin cloudmart-smoke -- $(ARGS)

# PostgreSQL server the benchmarks create their databases on. Plaintext, as the chart's
# PostgreSQL serves it (no TLS, like the official image): Debian's own cluster has ssl=on,
# and its TLS handshake (server-side OpenSSL 3.0) adds ~75 ms to every new connection.
BENCH_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable

# Apache Kafka of the benchmarks: BENCH_KAFKA_BROKERS, or else a broker of their own that
# bench-report starts on BENCH_KAFKA_PORT (and the next port for its controller) with
# deploy/kafka.sh — state under ~/.cache/cloudmart/kafka/*-<port>, apart from a CI broker on
# 9092 — and stops afterwards. BENCH_ARGS go to `cloudmart-bench run` (--quick: CI-sized).
BENCH_KAFKA_PORT ?= 19092
BENCH_ARGS ?=

bench: bench-scale bench-report ## Every benchmark figure beside its reference: target/bench/report.{json,md}, README table

bench-report: ## P1…P5 in one run (PostgreSQL, Apache Kafka, redis-server, pgbench); writes the README's table
	$(CARGO) build $(CARGO_FLAGS) --release -p cloudmart-e2e -p cloudmart-order -p cloudmart-delivery -p cloudmart-timesale --bins
	@set -euo pipefail; kafka() { KAFKA_PORT=$(BENCH_KAFKA_PORT) KAFKA_CONTROLLER_PORT=$$(( $(BENCH_KAFKA_PORT) + 1 )) bash deploy/kafka.sh "$$@"; }; \
	brokers="$${BENCH_KAFKA_BROKERS:-}"; started=; \
	if [ -z "$$brokers" ]; then \
	  if kafka status >/dev/null 2>&1; then brokers=127.0.0.1:$(BENCH_KAFKA_PORT); \
	  elif kafka start; then brokers=127.0.0.1:$(BENCH_KAFKA_PORT); started=1; \
	  else echo "bench: no Apache Kafka (deploy/kafka.sh start failed): the in-process mock broker stands in"; fi; \
	fi; \
	name="$${BENCH_BROKER_NAME:-Apache Kafka $$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)}"; \
	bench="$${CARGO_TARGET_DIR:-target}/release/cloudmart-bench"; \
	rc=0; BENCH_KAFKA_BROKERS="$$brokers" BENCH_BROKER_NAME="$$name" "$$bench" run --database-url "$(BENCH_DATABASE_URL)" $(BENCH_ARGS) || rc=$$?; \
	if [ -n "$$started" ]; then kafka stop; fi; \
	[ "$$rc" = 0 ] || exit "$$rc"; \
	"$$bench" readme --report target/bench/report.md

bench-hot-sale: ## P1 alone: purchases/s on one hot sale, batched vs naive vs a Redis counter (in-process broker)
	$(CARGO) run $(CARGO_FLAGS) --release -p cloudmart-e2e --bin cloudmart-bench -- run --only p1 --database-url "$(BENCH_DATABASE_URL)" $(ARGS)

bench-scale: ## Rehearsal (Docker): time-sale at 1/2/4 replicas, then the HPA replay (target/bench/scale-out.json, hpa-replay.{json,png})
	@if ! $${DOCKER:-docker} info >/dev/null 2>&1; then echo "bench-scale: SKIPPED (no Docker engine answers; it runs the chart as containers)"; else \
	  bash deploy/rehearse.sh scale-out $(SCALE_ARGS) && SKIP_IMAGES=1 bash deploy/rehearse.sh hpa-replay $(HPA_ARGS); fi

images: ## The four images (IMAGE_TAG, default dev); air-gapped bases when no registry answers (AIRGAP=1 forces)
	bash deploy/images.sh

rehearse: ## The Helm chart run as Docker containers: probes, helm test, saga, load Job, trace, audit (ARGS=--keep ...)
	bash deploy/rehearse.sh $(ARGS)

chaos: ## Nemesis under mixed load on the rehearsed chart: kills, partitions, freezes; 0 lost/duplicated/oversold + audit (ARGS=--seed N --duration-secs 600)
	bash deploy/rehearse.sh chaos $(ARGS)

jaeger: ## Jaeger v2 without Docker (built once with Go): OTLP :4317, query API :16686 (no web UI in a Go build)
	bash deploy/jaeger.sh run

kafka: ## Apache Kafka (KRaft) on 127.0.0.1:9092 without Docker, in the background (`bash deploy/kafka.sh stop`)
	bash deploy/kafka.sh start

clean: ## Remove build output and local data
	$(CARGO) clean
	rm -rf data
