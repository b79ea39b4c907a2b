{{/* citadel's ports: name, Service port, container port. */}}
{{- define "citadel.ports" -}}
- {name: grpc-ca, port: 8060, targetPort: 8060}
- {name: http-monitoring, port: 15014, targetPort: 15014}
{{- end -}}

{{/* More than one citadel must share one CA and one ledger. */}}
{{- define "citadel.checkReplicas" -}}
{{- $pg := (.Values.global | default dict).postgresql | default dict -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicas) 1) -}}
{{- if not .Values.cacerts.secretName -}}
{{- fail "citadel with more than one replica needs cacerts.secretName: every replica must sign with the same CA" -}}
{{- end -}}
{{- if not $pg.enabled -}}
{{- fail "citadel with more than one replica needs global.postgresql: replicas share the certificate ledger" -}}
{{- end -}}
{{- if .Values.persistence.enabled -}}
{{- fail "citadel's persistence (a ReadWriteOnce claim) is for one replica; with more, use cacerts and PostgreSQL" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "citadel.dnsNames" -}}
{{- $svc := include "citadel.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- join "," (concat $names .Values.dnsNames | uniq) -}}
{{- end -}}

{{- define "citadel.env" -}}
{{- include "citadel.checkReplicas" . }}
- name: CITADEL_GRPC_ADDR
  value: "0.0.0.0:8060"
- name: CITADEL_MONITORING_ADDR
  value: "0.0.0.0:15014"
- name: CITADEL_DATA_DIR
  value: /var/lib/dromon/citadel
- name: CITADEL_TRUST_DOMAIN
  value: {{ include "citadel.trustDomain" . | quote }}
- name: CITADEL_DEFAULT_TTL
  value: {{ .Values.defaultTtl | quote }}
- name: CITADEL_MAX_TTL
  value: {{ .Values.maxTtl | quote }}
- name: CITADEL_ROOT_RENEW_BEFORE
  value: {{ .Values.rootRenewBefore | quote }}
- name: CITADEL_LOCAL_ISSUER
  value: {{ .Values.localIssuer | quote }}
- name: CITADEL_DNS_NAMES
  value: {{ include "citadel.dnsNames" . | quote }}
- name: CITADEL_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: CITADEL_SERVICE_ACCOUNT
  valueFrom:
    fieldRef:
      fieldPath: spec.serviceAccountName
{{- $k := .Values.kubernetes }}
{{- $fromCitadel := include "citadel.webhookCertificates" . | eq "true" }}
{{- $secrets := or $k.secrets $fromCitadel }}
{{- if or $k.tokenReview $secrets $k.patchWebhookCABundles }}
- name: DROMON_KUBE_IN_CLUSTER
  value: "true"
- name: CITADEL_LEASE_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}
{{- if $k.tokenReview }}
- name: CITADEL_KUBE_TOKEN_REVIEW
  value: "true"
{{- end }}
{{- if $secrets }}
- name: CITADEL_KUBE_SECRETS
  value: "true"
{{- $namespaces := $k.secretNamespaces }}
{{- if and $fromCitadel (or (not $k.secrets) $namespaces) }}
{{- /* Only the webhooks' Secrets wanted, or a list that must include them. */}}
{{- $namespaces = (not $k.secrets) | ternary (list .Release.Namespace) (append $namespaces .Release.Namespace | uniq) }}
{{- end }}
{{- with $namespaces }}
- name: CITADEL_SECRET_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- if $fromCitadel }}
{{- $ns := .Release.Namespace }}
{{- $certs := list }}
{{- range $peer := list "sidecar-injector" "galley" }}
{{- $name := include "citadel.peer" (dict "ctx" $ "peer" $peer) }}
{{- $certs = append $certs (printf "%s/%s=%s.%s.svc" $ns $name $name $ns) }}
{{- end }}
- name: CITADEL_DNS_CERTS
  value: {{ join ";" $certs | quote }}
{{- end }}
{{- if or $k.patchWebhookCABundles $fromCitadel }}
{{- $injector := printf "%s-%s" (include "citadel.peer" (dict "ctx" . "peer" "sidecar-injector")) .Release.Namespace }}
{{- $galley := printf "%s-%s" (include "citadel.peer" (dict "ctx" . "peer" "galley")) .Release.Namespace }}
- name: CITADEL_PATCH_WEBHOOKS
  value: {{ printf "%s,%s" $injector $galley | quote }}
{{- end }}
{{- if .Values.cacerts.secretName }}
- name: CITADEL_CACERTS
  value: /etc/dromon/cacerts
{{- end }}
{{- if .Values.jwt.issuer }}
{{- if not .Values.jwt.jwksUrl }}
{{- fail "jwt.issuer needs jwt.jwksUrl" }}
{{- end }}
- name: CITADEL_JWT_ISSUER
  value: {{ .Values.jwt.issuer | quote }}
- name: CITADEL_JWT_AUDIENCE
  value: {{ .Values.jwt.audience | quote }}
- name: CITADEL_JWKS_URL
  value: {{ .Values.jwt.jwksUrl | quote }}
{{- end }}
{{- include "citadel.postgresqlEnv" (dict "ctx" . "env" "CITADEL_LEDGER") }}
{{- end -}}

{{- define "citadel.volumeMounts" -}}
- name: data
  mountPath: /var/lib/dromon/citadel
{{- if .Values.cacerts.secretName }}
- name: cacerts
  mountPath: /etc/dromon/cacerts
  readOnly: true
{{- end }}
{{- end -}}

{{- define "citadel.volumes" -}}
- name: data
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "citadel.fullname" .)) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- if .Values.cacerts.secretName }}
- name: cacerts
  secret:
    secretName: {{ .Values.cacerts.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "citadel.podAnnotations" -}}
{{- end -}}

{{/* A ReadWriteOnce claim cannot be held by two pods: replace rather than surge. */}}
{{- define "citadel.strategy" -}}
{{- if .Values.persistence.enabled -}}
type: Recreate
{{- else -}}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- end -}}
{{- end -}}
