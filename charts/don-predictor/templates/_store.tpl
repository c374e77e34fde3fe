{{/* The model store: where versions live (<root>/<model>/<N>) and how pods reach it. */}}

{{/* The model store's claim: modelStore.pvc.claimName, else <fullname>-model-store. */}}
{{- define "don.claimName" -}}
{{- default (printf "%s-model-store" (include "don.fullname" .)) .Values.modelStore.pvc.claimName -}}
{{- end -}}

{{- define "don.s3SecretName" -}}
{{- if .Values.modelStore.s3.existingSecret -}}
{{- .Values.modelStore.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "don.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "don.s3Root" -}}
{{- $s3 := .Values.modelStore.s3 -}}
{{- if $s3.prefix -}}
{{- printf "s3://%s/%s" $s3.bucket (trimAll "/" $s3.prefix) -}}
{{- else -}}
{{- printf "s3://%s" $s3.bucket -}}
{{- end -}}
{{- end -}}

{{/* The store root as the training Job and the backup see it. */}}
{{- define "don.storeRoot" -}}
{{- if eq .Values.modelStore.type "s3" -}}
{{- include "don.s3Root" . -}}
{{- else -}}
{{- .Values.modelStore.pvc.mountPath -}}
{{- end -}}
{{- end -}}

{{/* storageUri of one version: (dict "ctx" $ "model" "don-rf" "version" 1); the layout <root>/<model>/<N>
is don_core.contract.storage_uri's (tests/chart/test_contract.py) */}}
{{- define "don.storageUri" -}}
{{- if eq .ctx.Values.modelStore.type "s3" -}}
{{- printf "%s/%s/%v" (include "don.s3Root" .ctx) .model (int .version) -}}
{{- else -}}
{{- printf "pvc://%s/%s/%v" (include "don.claimName" .ctx) .model (int .version) -}}
{{- end -}}
{{- end -}}

{{/* AWS_* environment from the S3 Secret (never a literal credential). */}}
{{- define "don.s3Env" -}}
{{- $s3 := .Values.modelStore.s3 -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "don.s3SecretName" . }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "don.s3SecretName" . }}, key: AWS_SECRET_ACCESS_KEY}
- name: AWS_REGION
  value: {{ $s3.region | quote }}
{{- if $s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ printf "%s://%s" (ternary "https" "http" $s3.useHttps) $s3.endpoint | quote }}
{{- end }}
{{- end -}}
