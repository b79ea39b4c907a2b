{{/* mixer-policy's ports: name, Service port, container port. */}}
{{- define "mixer-policy.ports" -}}
- {name: grpc-check, port: 9091, targetPort: 9091}
{{- if .Values.tls.secretName }}
- {name: grpc-check-tls, port: 15004, targetPort: 15004}
{{- end }}
- {name: http-monitoring, port: 15014, targetPort: 15014}
{{- end -}}

{{/* galley's MCP endpoint: the value, else this release's galley Service. */}}
{{- define "mixer-policy.galleyAddress" -}}
{{- if .Values.galleyAddress -}}
{{- .Values.galleyAddress -}}
{{- else -}}
{{- $galley := include "mixer-policy.peer" (dict "ctx" . "peer" "galley") -}}
{{- if .Values.tls.secretName -}}
{{- printf "https://%s.%s.svc:9902" $galley .Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc:9901" $galley .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mixer-policy.env" -}}
- name: MIXER_POLICY_GALLEY
  value: {{ include "mixer-policy.galleyAddress" . | quote }}
- name: MIXER_POLICY_GRPC_ADDR
  value: "0.0.0.0:9091"
- name: MIXER_POLICY_MONITORING_ADDR
  value: "0.0.0.0:15014"
- name: MIXER_POLICY_FAILURE_POLICY
  value: {{ .Values.failurePolicy | quote }}
- name: MIXER_POLICY_DATA_DIR
  value: /var/lib/dromon/mixer-policy
{{- if .Values.tls.secretName }}
- name: MIXER_POLICY_TLS_DIR
  value: /etc/dromon/certs
- name: MIXER_POLICY_MTLS_ADDR
  value: "0.0.0.0:15004"
{{- with .Values.galleyIdentity }}
- name: MIXER_POLICY_GALLEY_IDENTITY
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- include "mixer-policy.postgresqlEnv" (dict "ctx" . "env" "MIXER_POLICY_QUOTA_DATABASE") }}
{{- end -}}

{{- define "mixer-policy.volumeMounts" -}}
- name: data
  mountPath: /var/lib/dromon/mixer-policy
{{- if .Values.tls.secretName }}
- name: certs
  mountPath: /etc/dromon/certs
  readOnly: true
{{- end }}
{{- end -}}

{{- define "mixer-policy.volumes" -}}
- name: data
  emptyDir: {}
{{- if .Values.tls.secretName }}
- name: certs
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "mixer-policy.podAnnotations" -}}
{{- end -}}

{{- define "mixer-policy.strategy" -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
