{{/*
Names and labels of the galley chart. Every helper is prefixed with the chart's
name, so the charts can sit side by side under the dromon umbrella chart.
*/}}

{{- define "galley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-galley, or the release name alone when it already names the chart. */}}
{{- define "galley.fullname" -}}
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

{{/* The Service name another Dromon chart of the same release gets: (dict "ctx" . "peer" "galley"). */}}
{{- define "galley.peer" -}}
{{- if contains .peer .ctx.Release.Name -}}
{{- .ctx.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .ctx.Release.Name .peer | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "galley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "galley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "galley.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "galley.labels" -}}
helm.sh/chart: {{ include "galley.chart" . }}
{{ include "galley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Chart.Name }}
app.kubernetes.io/part-of: dromon
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* "true" when global.webhookCertificates.fromCitadel is set. */}}
{{- define "galley.certificatesFromCitadel" -}}
{{- (((.Values.global | default dict).webhookCertificates | default dict).fromCitadel | default false) -}}
{{- end -}}

{{/* The Secret the validating webhook serves from: citadel's istio.<sa>, or validationWebhook.tlsSecretName. */}}
{{- define "galley.webhookTlsSecretName" -}}
{{- if eq (include "galley.certificatesFromCitadel" .) "true" -}}
{{- if ne (include "galley.serviceAccountName" .) (include "galley.fullname" .) -}}
{{- fail "global.webhookCertificates.fromCitadel: citadel issues the certificate of galley's default service account; unset serviceAccount.name" -}}
{{- end -}}
{{- printf "istio.%s" (include "galley.serviceAccountName" .) -}}
{{- else -}}
{{- .Values.validationWebhook.tlsSecretName -}}
{{- end -}}
{{- end -}}

{{- define "galley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "galley.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name for cluster-scoped objects: unique per release namespace. */}}
{{- define "galley.clusterName" -}}
{{- printf "%s-%s" (include "galley.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* registry/repository:tag, each part falling back to global.image, then appVersion. */}}
{{- define "galley.image" -}}
{{- $global := (.Values.global | default dict).image | default dict -}}
{{- $registry := .Values.image.registry | default $global.registry | default "" -}}
{{- $tag := .Values.image.tag | default $global.tag | default .Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "galley.imagePullPolicy" -}}
{{- $global := (.Values.global | default dict).image | default dict -}}
{{- .Values.image.pullPolicy | default $global.pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{- define "galley.trustDomain" -}}
{{- .Values.trustDomain | default ((.Values.global | default dict).trustDomain) | default "cluster.local" -}}
{{- end -}}

{{/*
An env entry for a database URL from global.postgresql: (dict "ctx" . "env" "NAME").
Renders nothing when PostgreSQL is not enabled.
*/}}
{{- define "galley.postgresqlEnv" -}}
{{- $pg := (.ctx.Values.global | default dict).postgresql | default dict -}}
{{- if $pg.enabled }}
{{- $existing := $pg.existingSecret | default dict }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      {{- if $existing.name }}
      name: {{ $existing.name }}
      key: {{ $existing.key | default "url" }}
      {{- else if $pg.url }}
      name: {{ include "galley.fullname" .ctx }}-postgresql
      key: url
      {{- else }}
      {{- fail "global.postgresql.enabled needs global.postgresql.url or global.postgresql.existingSecret.name" }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* The Secret holding global.postgresql.url, when given as a URL. */}}
{{- define "galley.postgresqlSecret" -}}
{{- $pg := (.Values.global | default dict).postgresql | default dict -}}
{{- $existing := $pg.existingSecret | default dict -}}
{{- if and $pg.enabled $pg.url (not $existing.name) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "galley.fullname" . }}-postgresql
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "galley.labels" . | nindent 4 }}
type: Opaque
stringData:
  url: {{ $pg.url | quote }}
{{- end }}
{{- end -}}
