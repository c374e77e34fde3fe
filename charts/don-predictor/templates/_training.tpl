{{/* Pod spec of a training run for one model: (dict "ctx" $ "model" $m) */}}
{{- define "don.trainingPodSpec" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $pvc := eq $v.modelStore.type "pvc" -}}
serviceAccountName: {{ include "don.fullname" $ctx }}-training
automountServiceAccountToken: false
restartPolicy: Never
securityContext:
  {{- include "don.podSecurityContext" $ctx | nindent 2 }}
{{- with include "don.imagePullSecrets" $ctx }}{{ . | trim | nindent 0 }}{{ end }}
containers:
  - name: train
    image: {{ include "don.image" (dict "ctx" $ctx "image" $v.images.trainingJob) }}
    imagePullPolicy: {{ $v.images.pullPolicy }}
    command: ["python", "-m", "training_job", "train"]
    env:
      - {name: DON_DATA, value: {{ $v.training.data | quote }}}
      - {name: DON_STORE, value: {{ include "don.storeRoot" $ctx | quote }}}
      - {name: DON_MODEL, value: {{ .model.name | quote }}}
      - {name: DON_FAMILY, value: {{ ternary "rf" "tf" (eq .model.family "sklearn") | quote }}}
      - {name: DON_SEED, value: {{ $v.training.seed | quote }}}
      - {name: DON_QUICK, value: {{ ternary "1" "0" $v.training.quick | quote }}}
      - {name: DON_ACCEPT_RELABEL, value: {{ ternary "1" "0" $v.training.acceptRelabel | quote }}}
      {{- if not (kindIs "invalid" $v.training.referenceFraction) }}
      - {name: DON_REFERENCE_FRACTION, value: {{ $v.training.referenceFraction | toString | quote }}}
      {{- end }}
      {{- if or (not $pvc) (hasPrefix "s3://" $v.training.data) }}
      {{- include "don.s3Env" $ctx | trim | nindent 6 }}
      {{- end }}
      {{- include "don.otelEnv" (dict "ctx" $ctx "service" "don-training") | trim | nindent 6 }}
    resources:
      {{- toYaml $v.training.resources | nindent 6 }}
    securityContext:
      {{- include "don.containerSecurityContext" $ctx | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
      {{- if $pvc }}
      - {name: store, mountPath: {{ $v.modelStore.pvc.mountPath }}}
      {{- end }}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 2Gi}
  {{- if $pvc }}
  - name: store
    persistentVolumeClaim:
      claimName: {{ include "don.claimName" $ctx }}
  {{- end }}
{{- end -}}
