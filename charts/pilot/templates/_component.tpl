{{/* pilot's ports: name, Service port, container port. */}}
{{- define "pilot.ports" -}}
- {name: grpc-xds, port: 15010, targetPort: 15010}
{{- if .Values.tls.secretName }}
- {name: grpc-xds-tls, port: 15011, targetPort: 15011}
{{- end }}
- {name: http-monitoring, port: 15014, targetPort: 15014}
{{- end -}}

{{/* galley's MCP endpoint: the value, else this release's galley Service. */}}
{{- define "pilot.galleyAddress" -}}
{{- if .Values.galleyAddress -}}
{{- .Values.galleyAddress -}}
{{- else -}}
{{- $galley := include "pilot.peer" (dict "ctx" . "peer" "galley") -}}
{{- if .Values.tls.secretName -}}
{{- printf "https://%s.%s.svc:9902" $galley .Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc:9901" $galley .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pilot.env" -}}
- name: PILOT_GALLEY
  value: {{ include "pilot.galleyAddress" . | quote }}
- name: PILOT_XDS_ADDR
  value: "0.0.0.0:15010"
- name: PILOT_MONITORING_ADDR
  value: "0.0.0.0:15014"
- name: PILOT_DEBOUNCE
  value: {{ .Values.debounce | quote }}
- name: PILOT_DEBOUNCE_MAX
  value: {{ .Values.debounceMax | quote }}
- name: PILOT_TRUST_DOMAIN
  value: {{ include "pilot.trustDomain" . | quote }}
{{- if .Values.kubernetes.enabled }}
- name: PILOT_KUBE
  value: "true"
- name: DROMON_KUBE_IN_CLUSTER
  value: "true"
- name: PILOT_CLUSTER_DOMAIN
  value: {{ .Values.kubernetes.clusterDomain | quote }}
{{- end }}
{{- if .Values.tls.secretName }}
- name: PILOT_TLS_DIR
  value: /etc/dromon/certs
- name: PILOT_XDS_MTLS_ADDR
  value: "0.0.0.0:15011"
{{- with .Values.galleyIdentity }}
- name: PILOT_GALLEY_IDENTITY
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "pilot.volumeMounts" -}}
{{- if .Values.tls.secretName }}
- name: certs
  mountPath: /etc/dromon/certs
  readOnly: true
{{- end }}
{{- end -}}

{{- define "pilot.volumes" -}}
{{- if .Values.tls.secretName }}
- name: certs
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "pilot.podAnnotations" -}}
{{- end -}}

{{- define "pilot.strategy" -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
