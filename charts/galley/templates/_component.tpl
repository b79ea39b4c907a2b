{{/* galley's ports: name, Service port, container port. */}}
{{- define "galley.ports" -}}
- {name: grpc-mcp, port: 9901, targetPort: 9901}
{{- if .Values.tls.secretName }}
- {name: grpc-mcp-tls, port: 9902, targetPort: 9902}
{{- end }}
- {name: http-monitoring, port: 15014, targetPort: 15014}
{{- if .Values.validationWebhook.enabled }}
- {name: https-webhook, port: 443, targetPort: {{ .Values.validationWebhook.containerPort }}}
{{- end }}
{{- end -}}

{{- define "galley.configMapName" -}}
{{- .Values.config.existingConfigMap | default (printf "%s-config" (include "galley.fullname" .)) -}}
{{- end -}}

{{- define "galley.env" -}}
{{- if eq .Values.source "kubernetes" }}
- name: GALLEY_KUBE
  value: "true"
- name: DROMON_KUBE_IN_CLUSTER
  value: "true"
{{- with .Values.watchNamespaces }}
- name: GALLEY_WATCH_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
- name: GALLEY_WRITE_STATUS
  value: {{ .Values.writeStatus | quote }}
{{- if .Values.writeStatus }}
- name: GALLEY_LEASE_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}
{{- else }}
- name: GALLEY_CONFIG_DIR
  value: /etc/dromon/config
{{- end }}
- name: GALLEY_MCP_ADDR
  value: "0.0.0.0:9901"
- name: GALLEY_MONITORING_ADDR
  value: "0.0.0.0:15014"
- name: GALLEY_DEFAULT_NAMESPACE
  value: {{ .Values.defaultNamespace | quote }}
- name: GALLEY_DEBOUNCE
  value: {{ .Values.debounce | quote }}
- name: GALLEY_DEBOUNCE_MAX
  value: {{ .Values.debounceMax | quote }}
{{- if .Values.tls.secretName }}
- name: GALLEY_TLS_DIR
  value: /etc/dromon/certs
- name: GALLEY_MCP_MTLS_ADDR
  value: "0.0.0.0:9902"
- name: GALLEY_ALLOWED_CLIENTS
  {{- $default := list (printf "spiffe://%s/ns/%s/sa/*" (include "galley.trustDomain" .) .Release.Namespace) }}
  value: {{ join "," (.Values.tls.allowedClients | default $default) | quote }}
{{- end }}
{{- if .Values.validationWebhook.enabled }}
- name: GALLEY_WEBHOOK_TLS_DIR
  value: /etc/dromon/webhook-certs
- name: GALLEY_WEBHOOK_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.validationWebhook.containerPort) | quote }}
{{- end }}
{{- end -}}

{{- define "galley.volumeMounts" -}}
{{- if ne .Values.source "kubernetes" }}
- name: config
  mountPath: /etc/dromon/config
  readOnly: true
{{- end }}
{{- if .Values.tls.secretName }}
- name: certs
  mountPath: /etc/dromon/certs
  readOnly: true
{{- end }}
{{- if .Values.validationWebhook.enabled }}
- name: webhook-certs
  mountPath: /etc/dromon/webhook-certs
  readOnly: true
{{- end }}
{{- end -}}

{{- define "galley.volumes" -}}
{{- if ne .Values.source "kubernetes" }}
- name: config
  configMap:
    name: {{ include "galley.configMapName" . }}
{{- end }}
{{- if .Values.tls.secretName }}
- name: certs
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- if .Values.validationWebhook.enabled }}
- name: webhook-certs
  secret:
    secretName: {{ include "galley.webhookTlsSecretName" . }}
{{- end }}
{{- end -}}

{{- define "galley.podAnnotations" -}}
checksum/config: {{ toJson .Values.config | sha256sum }}
{{- end -}}

{{- define "galley.strategy" -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
