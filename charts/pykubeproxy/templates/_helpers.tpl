{{/* The chart's name, or nameOverride. */}}
{{- define "pykubeproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride, else the release name (with the chart's name appended
unless it already contains it). */}}
{{- define "pykubeproxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pykubeproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "pykubeproxy.labels" -}}
helm.sh/chart: {{ include "pykubeproxy.chart" . }}
{{ include "pykubeproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the proxy's pods. */}}
{{- define "pykubeproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pykubeproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pykubeproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pykubeproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pykubeproxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* HOST:PORT for /metrics: bindIP, else 0.0.0.0 when something scrapes it from outside the
node (the metrics Service or a ServiceMonitor), else kube-proxy's 127.0.0.1. */}}
{{- define "pykubeproxy.metricsBindAddress" -}}
{{- $scraped := or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled }}
{{- $ip := .Values.metrics.bindIP | default (ternary "0.0.0.0" "127.0.0.1" $scraped) }}
{{- printf "%s:%d" $ip (int .Values.metrics.port) }}
{{- end }}

{{/* The KubeProxyConfiguration document. Every value goes through toJson (JSON is YAML), so
strings stay strings and nothing in values can break the document's structure. */}}
{{- define "pykubeproxy.config" -}}
{{- $c := .Values.config -}}
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: {{ $c.mode | toJson }}
clusterCIDR: {{ $c.clusterCIDR | toJson }}
nodePortAddresses: {{ $c.nodePortAddresses | toJson }}
metricsBindAddress: {{ include "pykubeproxy.metricsBindAddress" . | toJson }}
healthzBindAddress: {{ printf "0.0.0.0:%d" (int .Values.healthz.port) | toJson }}
clientConnection:
  qps: {{ $c.clientConnection.qps | toJson }}
  burst: {{ $c.clientConnection.burst | toJson }}
iptables:
  masqueradeAll: {{ $c.iptables.masqueradeAll | toJson }}
  masqueradeBit: {{ $c.iptables.masqueradeBit | toJson }}
  localhostNodePorts: {{ $c.iptables.localhostNodePorts | toJson }}
  syncPeriod: {{ $c.iptables.syncPeriod | toJson }}
  minSyncPeriod: {{ $c.iptables.minSyncPeriod | toJson }}
ipvs:
  scheduler: {{ $c.ipvs.scheduler | toJson }}
{{- end }}
