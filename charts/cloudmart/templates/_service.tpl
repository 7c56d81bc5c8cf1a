{{/*
cloudmart.service renders everything one gRPC service needs: ServiceAccount, ConfigMap,
Deployment, Service, NetworkPolicy and, when the service's values carry them (time-sale
only; the schema forbids them elsewhere), HorizontalPodAutoscaler and PodDisruptionBudget.

Usage (templates/order.yaml): {{ include "cloudmart.service" (dict "root" $ "name" "order") }}
*/}}
{{- define "cloudmart.service" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $v := index $root.Values $name -}}
{{- $fullname := include "cloudmart.name" (dict "root" $root "part" $name) -}}
{{- $tag := include "cloudmart.imageTag" (dict "root" $root "image" $v.image) -}}
{{- $labelArgs := dict "root" $root "part" $name "component" "grpc-service" "version" $tag -}}
{{- $autoscaling := and (hasKey $v "autoscaling") $v.autoscaling.enabled -}}
{{- /* who calls whom synchronously (everything else goes through Kafka) */ -}}
{{- $calls := dict "order" (list "delivery") "delivery" (list) "timesale" (list) -}}
{{- if and $autoscaling (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas (%v) must not exceed maxReplicas (%v)" $name $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) }}
{{- end -}}
{{- $config := include "cloudmart.serviceConfig" (dict "root" $root "name" $name) -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $fullname }}-config
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
data:
  {{- $config | nindent 2 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
spec:
  {{- if not $autoscaling }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 3
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "cloudmart.selectorLabels" $labelArgs | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cloudmart.labels" $labelArgs | nindent 8 }}
      annotations:
        checksum/config: {{ $config | sha256sum }}
        {{- if $root.Values.metrics.scrapeAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $v.metricsPort | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $fullname }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $root.Values.common.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- include "cloudmart.podSecurityContext" 65532 | nindent 8 }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" $labelArgs | nindent 14 }}
      {{- with $root.Values.common.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.common.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.common.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "cloudmart.image" (dict "root" $root "image" $v.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          ports:
            - name: grpc
              containerPort: {{ $v.grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $v.metricsPort }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $fullname }}-config
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: "service.namespace=cloudmart,service.version={{ $tag }},k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {{ include "cloudmart.dbSecretName" (dict "root" $root "name" $name) }}
                  key: {{ include "cloudmart.dbSecretKey" (dict "root" $root "name" $name) }}
            {{- with $root.Values.common.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            grpc:
              port: {{ $v.grpcPort }}
            periodSeconds: 2
            timeoutSeconds: 2
            failureThreshold: 60
          readinessProbe:
            grpc:
              port: {{ $v.grpcPort }}
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          livenessProbe:
            grpc:
              port: {{ $v.grpcPort }}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          {{- if gt (int $root.Values.common.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $root.Values.common.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "cloudmart.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "cloudmart.selectorLabels" $labelArgs | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
      {{- if and (eq $v.service.type "NodePort") $v.service.nodePort }}
      nodePort: {{ $v.service.nodePort }}
      {{- end }}
    - name: metrics
      port: {{ $v.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- if $autoscaling }}
{{- $as := $v.autoscaling }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}
  minReplicas: {{ $as.minReplicas }}
  maxReplicas: {{ $as.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $as.targetCPUUtilizationPercentage }}
  behavior:
    # A sale starts with a spike: add capacity at once, give it back slowly.
    scaleUp:
      stabilizationWindowSeconds: {{ $as.scaleUp.stabilizationWindowSeconds }}
      selectPolicy: Max
      policies:
        - type: Percent
          value: {{ $as.scaleUp.percent }}
          periodSeconds: {{ $as.scaleUp.periodSeconds }}
        - type: Pods
          value: {{ $as.scaleUp.pods }}
          periodSeconds: {{ $as.scaleUp.periodSeconds }}
    scaleDown:
      stabilizationWindowSeconds: {{ $as.scaleDown.stabilizationWindowSeconds }}
      selectPolicy: Min
      policies:
        - type: Percent
          value: {{ $as.scaleDown.percent }}
          periodSeconds: {{ $as.scaleDown.periodSeconds }}
{{- end }}
{{- if and (hasKey $v "podDisruptionBudget") $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
spec:
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "cloudmart.selectorLabels" $labelArgs | nindent 6 }}
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cloudmart.labels" $labelArgs | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "cloudmart.selectorLabels" $labelArgs | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    # load generator, smoke test, kubectl plugin pods -> gRPC
    - from:
        - podSelector:
            matchLabels:
              {{- include "cloudmart.clientLabel" $root | nindent 14 }}
        {{- range $caller, $callees := $calls }}
        {{- if has $name $callees }}
        # {{ $caller }} -> {{ $name }} (synchronous gRPC)
        - podSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" (dict "root" $root "part" $caller) | nindent 14 }}
        {{- end }}
        {{- end }}
      ports:
        - port: {{ $v.grpcPort }}
          protocol: TCP
    {{- with $root.Values.networkPolicy.metricsScrapers }}
    # Prometheus -> /metrics
    - from:
        {{- toYaml . | nindent 8 }}
      ports:
        - port: {{ $v.metricsPort }}
          protocol: TCP
    {{- end }}
    {{- if $root.Values.networkPolicy.allowExternal.enabled }}
    # outside the cluster (NodePort) -> gRPC
    - from:
        - ipBlock:
            cidr: {{ $root.Values.networkPolicy.allowExternal.cidr }}
      ports:
        - port: {{ $v.grpcPort }}
          protocol: TCP
    {{- end }}
  egress:
    # {{ $name }} -> its database
    {{- if $root.Values.postgresql.enabled }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" (dict "root" $root "part" "postgresql") | nindent 14 }}
      ports:
        - port: 5432
          protocol: TCP
    {{- else }}
    - ports:
        {{- range $root.Values.externalPostgresql.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    # {{ $name }} -> Kafka
    {{- if $root.Values.kafka.enabled }}
    - to:
        - podSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" (dict "root" $root "part" "kafka") | nindent 14 }}
      ports:
        - port: 9092
          protocol: TCP
    {{- else }}
    - ports:
        {{- range $root.Values.externalKafka.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if $root.Values.jaeger.enabled }}
    # {{ $name }} -> Jaeger (OTLP/gRPC)
    - to:
        - podSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" (dict "root" $root "part" "jaeger") | nindent 14 }}
      ports:
        - port: 4317
          protocol: TCP
    {{- else if $root.Values.externalJaeger.otlpEndpoint }}
    # {{ $name }} -> external OTLP endpoint
    - ports:
        {{- range $root.Values.externalJaeger.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- range $callee := (index $calls $name) }}
    # {{ $name }} -> {{ $callee }} (synchronous gRPC)
    - to:
        - podSelector:
            matchLabels:
              {{- include "cloudmart.selectorLabels" (dict "root" $root "part" $callee) | nindent 14 }}
      ports:
        - port: {{ (index $root.Values $callee).grpcPort }}
          protocol: TCP
    {{- end }}
{{- end }}
{{- end }}

{{/* The ConfigMap data (env vars) of one service; argument: dict "root" $ "name" "order" */}}
{{- define "cloudmart.serviceConfig" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .name -}}
GRPC_ADDR: {{ printf "0.0.0.0:%v" $v.grpcPort | quote }}
METRICS_ADDR: {{ printf "0.0.0.0:%v" $v.metricsPort | quote }}
KAFKA_BROKERS: {{ include "cloudmart.kafkaBrokers" $root | quote }}
{{- with $root.Values.common.kafkaTopicPrefix }}
KAFKA_TOPIC_PREFIX: {{ . | quote }}
{{- end }}
{{- with include "cloudmart.otlpEndpoint" $root }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
OTEL_SERVICE_NAME: {{ .name | quote }}
OTEL_TRACES_SAMPLER: {{ $root.Values.common.tracesSampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ $root.Values.common.tracesSamplerArg | quote }}
LOG_FORMAT: {{ $root.Values.common.logFormat | quote }}
RUST_LOG: {{ $root.Values.common.rustLog | quote }}
{{- if gt (int $v.maxConnectionAgeSecs) 0 }}
GRPC_MAX_CONNECTION_AGE_SECS: {{ $v.maxConnectionAgeSecs | quote }}
{{- end }}
{{- if eq .name "order" }}
DELIVERY_ENDPOINT: {{ printf "http://%s:%v" (include "cloudmart.name" (dict "root" $root "part" "delivery")) $root.Values.delivery.grpcPort | quote }}
{{- end }}
{{- if eq .name "delivery" }}
DELIVERY_COUNTRIES: {{ $v.countries | quote }}
DELIVERY_DAILY_CAPACITY: {{ $v.dailyCapacity | quote }}
{{- with $v.fault.failPostalCodes }}
FAULT_DELIVERY_FAIL_POSTAL_CODES: {{ . | quote }}
{{- end }}
FAULT_DELIVERY_FAIL_RATIO: {{ $v.fault.failRatio | quote }}
{{- end }}
{{- end }}
