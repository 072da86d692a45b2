{{/* The chart's name. */}}
{{- define "noc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, used by every resource. */}}
{{- define "noc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "noc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "noc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "noc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "noc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: noc
{{- end -}}

{{/* Pods: always one in embedded mode (SQLite and the in-process bus serve one node). */}}
{{- define "noc.replicas" -}}
{{- if .Values.embedded.enabled -}}1{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{/* The Secret with the backend URLs the chart creates (when not given existing ones). */}}
{{/*
Whether the pods link to each other directly ("true" or empty): only with Redis, outside
embedded mode.
*/}}
{{- define "noc.links" -}}
{{- if and .Values.links.enabled (not .Values.embedded.enabled) -}}true{{- end -}}
{{- end -}}

{{- define "noc.secretName" -}}
{{- printf "%s-backends" (include "noc.fullname" .) -}}
{{- end -}}

{{/*
How long Kubernetes waits after SIGTERM before it kills a pod: the preStop wait, the drain
window over which reconnect hints are spread, the drain's own grace, and 10 s to spare.
The chart's tests check this sum against the rendered manifest.
*/}}
{{- define "noc.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.config.shutdown.drainSeconds .Values.config.shutdown.graceSeconds 10 -}}
{{- end -}}

{{- define "noc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
