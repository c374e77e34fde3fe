{{/* API versions: the newer API only where the server has it (1.29+ target, 1.20 test cluster). */}}

{{- define "don.kubeAtLeast" -}}
{{- if semverCompare (printf ">=%s-0" .version) .ctx.Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{- define "don.hpaApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.23")) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end -}}
{{- end -}}

{{- define "don.cronJobApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "batch/v1") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.21")) -}}
batch/v1
{{- else -}}
batch/v1beta1
{{- end -}}
{{- end -}}

{{- define "don.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.21")) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{- define "don.hasGatewayApi" -}}
{{- if .Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1" -}}true{{- end -}}
{{- end -}}
