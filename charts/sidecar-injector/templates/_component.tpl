{{/* sidecar-injector's ports: name, Service port, container port. */}}
{{- define "sidecar-injector.ports" -}}
- {name: https-webhook, port: 443, targetPort: {{ .Values.webhook.containerPort }}}
- {name: http-monitoring, port: 15014, targetPort: 15014}
{{- end -}}

{{- define "sidecar-injector.configMapName" -}}
{{- printf "%s-config" (include "sidecar-injector.fullname" .) -}}
{{- end -}}

{{/* The injector's configuration file, defaults filled in from this release. */}}
{{- define "sidecar-injector.config" -}}
{{- $v := .Values.config.values -}}
{{- $pilot := include "sidecar-injector.peer" (dict "ctx" . "peer" "pilot") -}}
{{- $citadel := include "sidecar-injector.peer" (dict "ctx" . "peer" "citadel") -}}
policy: {{ .Values.config.policy }}
neverInjectSelector:
  {{- toYaml .Values.config.neverInjectSelector | nindent 2 }}
alwaysInjectSelector:
  {{- toYaml .Values.config.alwaysInjectSelector | nindent 2 }}
values:
  proxyImage: {{ $v.proxyImage | quote }}
  proxyInitImage: {{ $v.proxyInitImage | quote }}
  pilotAddress: {{ $v.pilotAddress | default (printf "%s.%s.svc:15011" $pilot .Release.Namespace) | quote }}
  citadelAddress: {{ $v.citadelAddress | default (printf "%s.%s.svc:8060" $citadel .Release.Namespace) | quote }}
  trustDomain: {{ $v.trustDomain | default (include "sidecar-injector.trustDomain" .) | quote }}
  proxyResources:
    {{- toYaml $v.proxyResources | nindent 4 }}
{{- with .Values.config.template }}
template: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "sidecar-injector.env" -}}
- name: SIDECAR_INJECTOR_WEBHOOK_ADDR
  value: {{ printf "0.0.0.0:%d" (int .Values.webhook.containerPort) | quote }}
- name: SIDECAR_INJECTOR_TLS_DIR
  value: /etc/dromon/injector-certs
- name: SIDECAR_INJECTOR_CONFIG
  value: /etc/dromon/injector/config.yaml
- name: SIDECAR_INJECTOR_MONITORING_ADDR
  value: "0.0.0.0:15014"
{{- end -}}

{{- define "sidecar-injector.volumeMounts" -}}
- name: certs
  mountPath: /etc/dromon/injector-certs
  readOnly: true
- name: config
  mountPath: /etc/dromon/injector
  readOnly: true
{{- end -}}

{{- define "sidecar-injector.volumes" -}}
- name: certs
  secret:
    secretName: {{ include "sidecar-injector.tlsSecretName" . }}
- name: config
  configMap:
    name: {{ include "sidecar-injector.configMapName" . }}
{{- end -}}

{{- define "sidecar-injector.podAnnotations" -}}
checksum/config: {{ include "sidecar-injector.config" . | sha256sum }}
{{- end -}}

{{- define "sidecar-injector.strategy" -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
