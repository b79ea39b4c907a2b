{{/* mixer-telemetry's ports: name, Service port, container port. */}}
{{- define "mixer-telemetry.ports" -}}
- {name: grpc-report, port: 9091, targetPort: 9091}
{{- if .Values.tls.secretName }}
- {name: grpc-report-tls, port: 15004, targetPort: 15004}
{{- end }}
- {name: http-monitoring, port: 15014, targetPort: 15014}
- {name: http-prom, port: 42422, targetPort: 42422}
{{- end -}}

{{/* galley's MCP endpoint: the value, else this release's galley Service. */}}
{{- define "mixer-telemetry.galleyAddress" -}}
{{- if .Values.galleyAddress -}}
{{- .Values.galleyAddress -}}
{{- else -}}
{{- $galley := include "mixer-telemetry.peer" (dict "ctx" . "peer" "galley") -}}
{{- if .Values.tls.secretName -}}
{{- printf "https://%s.%s.svc:9902" $galley .Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc:9901" $galley .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mixer-telemetry.env" -}}
- name: MIXER_TELEMETRY_GALLEY
  value: {{ include "mixer-telemetry.galleyAddress" . | quote }}
- name: MIXER_TELEMETRY_GRPC_ADDR
  value: "0.0.0.0:9091"
- name: MIXER_TELEMETRY_MONITORING_ADDR
  value: "0.0.0.0:15014"
- name: MIXER_TELEMETRY_PROMETHEUS_ADDR
  value: "0.0.0.0:42422"
- name: MIXER_TELEMETRY_QUEUE_RECORDS
  value: {{ .Values.queueRecords | quote }}
{{- with .Values.workers }}
- name: MIXER_TELEMETRY_WORKERS
  value: {{ . | quote }}
{{- end }}
{{- if not .Values.standardMetrics }}
- name: MIXER_TELEMETRY_NO_STANDARD_METRICS
  value: "true"
{{- end }}
- name: MIXER_TELEMETRY_DATA_DIR
  value: /var/lib/dromon/mixer-telemetry
{{- if .Values.tls.secretName }}
- name: MIXER_TELEMETRY_TLS_DIR
  value: /etc/dromon/certs
- name: MIXER_TELEMETRY_MTLS_ADDR
  value: "0.0.0.0:15004"
{{- with .Values.galleyIdentity }}
- name: MIXER_TELEMETRY_GALLEY_IDENTITY
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- include "mixer-telemetry.postgresqlEnv" (dict "ctx" . "env" "MIXER_TELEMETRY_LOG_DATABASE") }}
{{- end -}}

{{- define "mixer-telemetry.volumeMounts" -}}
- name: data
  mountPath: /var/lib/dromon/mixer-telemetry
{{- if .Values.tls.secretName }}
- name: certs
  mountPath: /etc/dromon/certs
  readOnly: true
{{- end }}
{{- end -}}

{{- define "mixer-telemetry.volumes" -}}
- name: data
  emptyDir: {}
{{- if .Values.tls.secretName }}
- name: certs
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end -}}

{{/* The pod annotations name 15014; the mesh metrics on 42422 are scraped through the Service's http-prom port (docs/deploy.md). */}}
{{- define "mixer-telemetry.podAnnotations" -}}
{{- end -}}

{{- define "mixer-telemetry.strategy" -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
