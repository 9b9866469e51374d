{{/* Name prefix of every object: the release name, or "<release>-fos1" when it does not contain "fos1". */}}
{{- define "fos1.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of one component: include "fos1.labels" (list . "node-worker") */}}
{{- define "fos1.labels" -}}
{{- $root := index . 0 -}}
{{ include "fos1.selectorLabels" . }}
app.kubernetes.io/part-of: fos1
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "fos1.selectorLabels" (list . "node-worker") */}}
{{- define "fos1.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: fos1
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "fos1.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The Temporal connection of every fos1 process. The TLS variables are the Temporal SDKs' own
names (workers/temporal-connection.ts); the material comes from the Secret mounted by
"fos1.temporalTlsVolume".
*/}}
{{- define "fos1.temporalEnv" -}}
- {name: TEMPORAL_ADDRESS, value: {{ .Values.temporal.address | quote }}}
- {name: TEMPORAL_NAMESPACE, value: {{ .Values.temporal.namespace | quote }}}
{{- with .Values.temporal.tls }}
{{- if .enabled }}
{{- if not .secretName }}{{ fail "temporal.tls.secretName: name the Secret holding the TLS material when temporal.tls.enabled is true" }}{{ end }}
{{- if ne (empty .certKey) (empty .keyKey) }}{{ fail "temporal.tls.certKey, temporal.tls.keyKey: set both (mutual TLS) or neither (server-authenticated TLS)" }}{{ end }}
- {name: TEMPORAL_TLS, value: "true"}
{{- if .certKey }}
- {name: TEMPORAL_TLS_CLIENT_CERT_PATH, value: {{ printf "/etc/fos1/temporal-tls/%s" .certKey | quote }}}
- {name: TEMPORAL_TLS_CLIENT_KEY_PATH, value: {{ printf "/etc/fos1/temporal-tls/%s" .keyKey | quote }}}
{{- end }}
{{- if .caKey }}
- {name: TEMPORAL_TLS_SERVER_CA_CERT_PATH, value: {{ printf "/etc/fos1/temporal-tls/%s" .caKey | quote }}}
{{- end }}
{{- if .serverName }}
- {name: TEMPORAL_TLS_SERVER_NAME, value: {{ .serverName | quote }}}
{{- end }}
{{- end }}
{{- end }}
- {name: LOG_LEVEL, value: {{ .Values.logLevel | quote }}}
{{- end -}}

{{- define "fos1.temporalTlsMount" -}}
{{- if .Values.temporal.tls.enabled }}
- {name: temporal-tls, mountPath: /etc/fos1/temporal-tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "fos1.temporalTlsVolume" -}}
{{- if .Values.temporal.tls.enabled }}
- name: temporal-tls
  secret:
    secretName: {{ .Values.temporal.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* FOS1_METRICS_PORT and the container port, when the ServiceMonitor asks for metrics. */}}
{{- define "fos1.metricsEnv" -}}
{{- if .Values.metrics.serviceMonitor.enabled }}
- {name: FOS1_METRICS_PORT, value: {{ .Values.metrics.port | quote }}}
{{- /* The listener binds loopback by default: bind the pod's own address (the node's, on the host network) so Prometheus reaches it. */}}
- {name: FOS1_METRICS_HOST, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
{{- end }}
{{- end -}}

{{- define "fos1.metricsPort" -}}
{{- if .Values.metrics.serviceMonitor.enabled }}
- {name: metrics, containerPort: {{ .Values.metrics.port }}, protocol: TCP}
{{- end }}
{{- end -}}

{{/* The restricted container security context of every component except the node worker. */}}
{{- define "fos1.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "fos1.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* Scheduling fields of a component's values: include "fos1.scheduling" .Values.api */}}
{{- define "fos1.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The audit store's environment (docs/audit.md): PostgreSQL from a Secret, else a folder in the pod. `reader`: the API's. */}}
{{- define "fos1.auditEnv" -}}
{{- $a := .root.Values.audit -}}
{{- $secret := $a.postgres.secretName -}}
{{- if and .reader $a.postgres.readerSecretName }}{{ $secret = $a.postgres.readerSecretName }}{{ end -}}
{{- if $secret }}
- name: FOS1_AUDIT_POSTGRES_URL
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: url}}
{{- end }}
- {name: FOS1_AUDIT_DIR, value: /var/lib/fos1/audit}
{{- if $a.signingKeySecret }}
{{- if .reader }}
- {name: FOS1_AUDIT_PUBLIC_KEYS, value: /etc/fos1/audit-key/audit-key.pem.pub}
{{- else }}
- {name: FOS1_AUDIT_SIGNING_KEY, value: /etc/fos1/audit-key/audit-key.pem}
{{- end }}
{{- end }}
{{- if not .reader }}
- {name: FOS1_AUDIT_CHECKPOINT_MS, value: {{ $a.checkpointEveryMs | quote }}}
{{- end }}
{{- end }}

{{- define "fos1.auditMount" -}}
- {name: audit-state, mountPath: /var/lib/fos1}
{{- if .root.Values.audit.signingKeySecret }}
- {name: audit-key, mountPath: /etc/fos1/audit-key, readOnly: true}
{{- end }}
{{- end }}

{{- define "fos1.auditVolume" -}}
- name: audit-state
  emptyDir: {}
{{- with .root.Values.audit.signingKeySecret }}
- name: audit-key
  secret:
    secretName: {{ . }}
    {{- if $.reader }}
    items: [{key: audit-key.pem.pub, path: audit-key.pem.pub}]
    {{- end }}
{{- end }}
{{- end }}

{{/*
Identity keys (docs/security.md): the API's (the API signs, the cluster workers check) and the
controllers' own (the controllers sign, the cluster workers check; it vouches for
fos1-controller only). Each Secret holds `identity.key` and is mounted only where it is used:
include "fos1.identityEnv" (dict "root" . "api" true "controller" false), and the same dict for
"fos1.identityMount" and "fos1.identityVolume".
*/}}
{{- define "fos1.identityCheck" -}}
{{- with .Values.identity }}
{{- if and .apiKeySecret (eq .apiKeySecret .controllerKeySecret) }}{{ fail "identity.controllerKeySecret: must be another Secret than identity.apiKeySecret (the controllers' key vouches for fos1-controller only; the API's for anyone else)" }}{{ end }}
{{- end }}
{{- end -}}

{{- define "fos1.identityEnv" -}}
{{- $i := .root.Values.identity -}}
{{- if and .api $i.apiKeySecret }}
- {name: FOS1_IDENTITY_KEY_FILE, value: /etc/fos1/identity/identity.key}
{{- end }}
{{- if and .controller $i.controllerKeySecret }}
- {name: FOS1_CONTROLLER_IDENTITY_KEY_FILE, value: /etc/fos1/controller-identity/identity.key}
{{- end }}
{{- end -}}

{{- define "fos1.identityMount" -}}
{{- $i := .root.Values.identity -}}
{{- if and .api $i.apiKeySecret }}
- {name: identity-key, mountPath: /etc/fos1/identity, readOnly: true}
{{- end }}
{{- if and .controller $i.controllerKeySecret }}
- {name: controller-identity-key, mountPath: /etc/fos1/controller-identity, readOnly: true}
{{- end }}
{{- end -}}

{{- define "fos1.identityVolume" -}}
{{- $i := .root.Values.identity -}}
{{- if and .api $i.apiKeySecret }}
- name: identity-key
  secret:
    secretName: {{ $i.apiKeySecret }}
    items: [{key: identity.key, path: identity.key}]
    defaultMode: 0440
{{- end }}
{{- if and .controller $i.controllerKeySecret }}
- name: controller-identity-key
  secret:
    secretName: {{ $i.controllerKeySecret }}
    items: [{key: identity.key, path: identity.key}]
    defaultMode: 0440
{{- end }}
{{- end -}}
