{{/* Names and labels shared by the umbrella's templates. */}}
{{- define "zcproxy.labels" -}}
app.kubernetes.io/part-of: zcproxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "zcproxy.dataplane.name" -}}{{ .Release.Name }}-dataplane{{- end }}

{{- define "zcproxy.dataplane.selector" -}}
app.kubernetes.io/name: zcproxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dataplane
{{- end }}

{{/* Whole cores only: the static CPU manager hands out exclusive cores only to
     Guaranteed pods with integer CPU requests = limits. */}}
{{- define "zcproxy.cores" -}}{{ int .Values.cores }}{{- end }}

{{- define "zcproxy.dataplane.memoryMi" -}}
{{ add (int .Values.dataplane.memory.baseMi) (mul (int .Values.dataplane.memory.perCoreMi) (int .Values.cores)) }}
{{- end }}

{{- define "zcproxy.dataplane.hugepagesMi" -}}
{{ mul (int .Values.dataplane.hugepages.perCoreMi) (int .Values.cores) }}
{{- end }}

{{- define "zcproxy.keysSecret" -}}
{{ .Values.global.keysSecret | default (printf "%s-keys" .Release.Name) }}
{{- end }}

{{- define "zcproxy.controlplaneUrl" -}}
{{- if .Values.controlplane.enabled -}}
http://{{ .Release.Name }}-controlplane:8080
{{- else -}}
{{ .Values.external.controlplaneUrl }}
{{- end -}}
{{- end }}

{{- define "zcproxy.natsUrl" -}}
{{- if .Values.nats.enabled -}}
nats://{{ .Release.Name }}-nats:4222
{{- else -}}
{{ .Values.external.natsUrl }}
{{- end -}}
{{- end }}

{{- define "zcproxy.sriovNetwork" -}}
{{ .Values.dataplane.sriov.networkName | default (printf "%s-sriov" .Release.Name) }}
{{- end }}

{{- define "zcproxy.image" -}}
{{ .repository }}:{{ .tag | default .appVersion }}
{{- end }}

{{- define "zcproxy.prometheusRule" -}}
{{- $want := .Values.metrics.prometheusRule.enabled -}}
{{- if eq (toString $want) "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule" }}true{{ end -}}
{{- else if $want -}}true{{- end -}}
{{- end }}

{{/* ServiceMonitor only where the CRD exists, unless forced. */}}
{{- define "zcproxy.serviceMonitor" -}}
{{- $want := .Values.metrics.serviceMonitor.enabled -}}
{{- if eq (toString $want) "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" }}true{{ end -}}
{{- else if $want -}}true{{- end -}}
{{- end }}

{{/* NetworkPolicy pieces. */}}
{{- define "zcproxy.np.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}
{{- define "zcproxy.np.prometheus" -}}
- namespaceSelector:
    {{- toYaml .Values.networkPolicy.prometheus.namespaceSelector | nindent 4 }}
  podSelector:
    {{- toYaml .Values.networkPolicy.prometheus.podSelector | nindent 4 }}
{{- end }}
