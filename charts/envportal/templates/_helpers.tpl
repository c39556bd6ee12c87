{{- define "envportal.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "envportal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "envportal.labels" -}}
app.kubernetes.io/name: {{ include "envportal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "envportal.selector" -}}
app.kubernetes.io/name: {{ include "envportal.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "envportal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "envportal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "envportal.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod security "restricted": non-root, no privilege escalation, no capabilities. */}}
{{- define "envportal.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "envportal.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every role reads the same settings: plain ones from the ConfigMap, secrets from the Secret. */}}
{{- define "envportal.env" -}}
- name: SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: SECRET_KEY}}
- name: DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: DATABASE_URL}}
- name: CELERY_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: CELERY_BROKER_URL}}
- name: REDIS_URL
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: REDIS_URL}}
- name: GITHUB_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: GITHUB_TOKEN}}
- name: GITHUB_WEBHOOK_SECRET
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: GITHUB_WEBHOOK_SECRET}}
- name: ARGOCD_PLUGIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.existingSecret }}, key: ARGOCD_PLUGIN_TOKEN, optional: true}}
{{- end -}}

{{- define "envportal.volumes" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "envportal.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
