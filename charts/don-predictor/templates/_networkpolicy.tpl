{{- define "don.egressDns" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {port: {{ .Values.networkPolicy.dnsPort }}, protocol: UDP}
    - {port: {{ .Values.networkPolicy.dnsPort }}, protocol: TCP}
{{- end -}}

{{- define "don.egressOtel" -}}
{{- if .Values.tracing.enabled }}
{{- if .Values.tracing.collector.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "don.componentSelector" (dict "ctx" . "component" "otel-collector") | nindent 10 }}
  ports:
    - {port: 4317, protocol: TCP}
    - {port: 4318, protocol: TCP}
{{- else if .Values.tracing.endpoint }}
- ports:
    - {port: {{ .Values.tracing.egressPort }}, protocol: TCP}
{{- end }}
{{- end }}
{{- end -}}

{{- define "don.egressS3" -}}
{{- $s3 := .Values.modelStore.s3 -}}
- ports:
    - {port: {{ $s3.egressPort }}, protocol: TCP}
  {{- with $s3.egressCIDRs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end -}}
