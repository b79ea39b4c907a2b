{{/* The Service name a component of this release gets: (dict "ctx" . "peer" "pilot"). */}}
{{- define "dromon.peer" -}}
{{- if contains .peer .ctx.Release.Name -}}
{{- .ctx.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .ctx.Release.Name .peer | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dromon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: dromon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dromon
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
