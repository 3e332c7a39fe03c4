{{- define "controlplane.name" -}}{{ .Release.Name }}-controlplane{{- end }}
{{- define "controlplane.selector" -}}
app.kubernetes.io/name: zcproxy-control
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controlplane
{{- end }}
{{- define "controlplane.labels" -}}
{{ include "controlplane.selector" . }}
app.kubernetes.io/part-of: zcproxy
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- define "controlplane.dbSecret" -}}
{{ .Values.database.existingSecret | default (printf "%s-controlplane-db" .Release.Name) }}
{{- end }}
