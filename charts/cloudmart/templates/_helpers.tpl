{{/*
Shared helpers. Every resource name is "<release>-<part>", e.g. cloudmart-order.
*/}}

{{/* The three services of the shop, in a fixed order. */}}
{{- define "cloudmart.serviceNames" -}}
order delivery timesale
{{- end }}

{{/* "<release>-<part>"; argument: dict "root" $ "part" "order" */}}
{{- define "cloudmart.name" -}}
{{- printf "%s-%s" .root.Release.Name .part | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Selector labels; argument: dict "root" $ "part" "order" */}}
{{- define "cloudmart.selectorLabels" -}}
app.kubernetes.io/name: {{ .part }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/*
Common labels; argument: dict "root" $ "part" "order" "component" "grpc-service"
and optionally "version" (defaults to the chart's appVersion).
*/}}
{{- define "cloudmart.labels" -}}
{{ include "cloudmart.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: cloudmart
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ (.version | default .root.Chart.AppVersion) | toString | replace "+" "_" | trunc 63 | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 }}
{{- end }}

{{/* Image tag of a cloudmart image; argument: dict "root" $ "image" <svc.image> */}}
{{- define "cloudmart.imageTag" -}}
{{- .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion | toString -}}
{{- end }}

{{/* Full image reference of a cloudmart image; argument: dict "root" $ "image" <svc.image> */}}
{{- define "cloudmart.image" -}}
{{- $tag := include "cloudmart.imageTag" . -}}
{{- with .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .) $.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* Hardened container securityContext (all containers that can take it). */}}
{{- define "cloudmart.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod securityContext; argument: the uid (int) the image runs as. */}}
{{- define "cloudmart.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Kafka bootstrap servers as seen by the services. */}}
{{- define "cloudmart.kafkaBrokers" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s:9092" (include "cloudmart.name" (dict "root" . "part" "kafka")) -}}
{{- else -}}
{{- required "externalKafka.brokers is required when kafka.enabled=false" .Values.externalKafka.brokers -}}
{{- end -}}
{{- end }}

{{/* OTLP/gRPC endpoint for the services (empty: no export). */}}
{{- define "cloudmart.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled -}}
{{- printf "http://%s:4317" (include "cloudmart.name" (dict "root" . "part" "jaeger")) -}}
{{- else -}}
{{- .Values.externalJaeger.otlpEndpoint -}}
{{- end -}}
{{- end }}

{{/* Name and key of the Secret holding a service's DATABASE_URL; argument: dict "root" $ "name" "order" */}}
{{- define "cloudmart.dbSecretName" -}}
{{- if .root.Values.postgresql.enabled -}}
{{- include "cloudmart.name" (dict "root" .root "part" (printf "%s-db" .name)) -}}
{{- else -}}
{{- $ext := index .root.Values.externalPostgresql .name -}}
{{- required (printf "externalPostgresql.%s.existingSecret is required when postgresql.enabled=false" .name) $ext.existingSecret -}}
{{- end -}}
{{- end }}

{{- define "cloudmart.dbSecretKey" -}}
{{- if .root.Values.postgresql.enabled -}}
url
{{- else -}}
{{- (index .root.Values.externalPostgresql .name).key | default "url" -}}
{{- end -}}
{{- end }}

{{/* Labels of pods that may call the services (load generator, smoke test, kubectl plugin). */}}
{{- define "cloudmart.clientLabel" -}}
cloudmart.io/client: "true"
{{- end }}

{{/* Pods of the dead-letter tools (`kubectl cloudmart dlq`, `cloudmart-audit dlq`), which read and re-publish Kafka records. */}}
{{- define "cloudmart.kafkaClientLabel" -}}
cloudmart.io/kafka-client: "true"
{{- end }}
