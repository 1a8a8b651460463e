{{/* Chart name. */}}
{{- define "walstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name. A release named "walstore" gives "walstore", so the S3
endpoint is http://walstore.<namespace>.svc:9000.
*/}}
{{- define "walstore.fullname" -}}
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

{{- define "walstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "walstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "walstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "walstore.labels" -}}
helm.sh/chart: {{ include "walstore.chart" . }}
{{ include "walstore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "walstore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "walstore.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret with the root keys (and the metrics token when given as a value). */}}
{{- define "walstore.rootSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-root-credentials" (include "walstore.fullname" .) }}
{{- end }}
{{- end }}

{{/* Secret name and key of the metrics token; empty name when there is none. */}}
{{- define "walstore.metricsTokenSecretName" -}}
{{- if .Values.metrics.existingSecret }}
{{- .Values.metrics.existingSecret }}
{{- else if .Values.metrics.token }}
{{- printf "%s-root-credentials" (include "walstore.fullname" .) }}
{{- end }}
{{- end }}

{{- define "walstore.metricsTokenSecretKey" -}}
{{- if .Values.metrics.existingSecret }}
{{- .Values.metrics.existingSecretKey }}
{{- else }}
{{- print "WALSTORE_METRICS_TOKEN" }}
{{- end }}
{{- end }}

{{- define "walstore.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
Fails the render when the pod could be killed before its drain ends:
terminationGracePeriodSeconds must exceed config.drainTimeout (checked for
durations written as Ns or Nm).
*/}}
{{- define "walstore.checkDrain" -}}
{{- $d := toString .Values.config.drainTimeout }}
{{- $secs := -1 }}
{{- if regexMatch "^[0-9]+s$" $d }}
{{- $secs = trimSuffix "s" $d | int }}
{{- else if regexMatch "^[0-9]+m$" $d }}
{{- $secs = mul (trimSuffix "m" $d | int) 60 }}
{{- end }}
{{- if and (ge $secs 0) (le (int .Values.terminationGracePeriodSeconds) $secs) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than config.drainTimeout (%s)" .Values.terminationGracePeriodSeconds $d) }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}
