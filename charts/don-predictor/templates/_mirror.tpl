{{/* ---------- the shadow step: the mirror setting the stable's servers read ---------- */}}
{{/* The operator writes ConfigMap <target>-mirror (key mirror.json) while a candidate runs as a
shadow (ops/rollout/shadow.py); the model server re-reads it at don_core.contract.MIRROR_CONFIG_PATH
(model_server/mirror.py). Optional and without subPath, so the pod starts without it and the
kubelet delivers its updates in place: starting and stopping a shadow restarts nothing.
(dict "ctx" $ "model" $m) */}}
{{- define "don.mirrorVolume" -}}
- name: mirror
  configMap:
    name: {{ printf "%s-mirror" .model.object }}
    optional: true
{{- end -}}

{{- define "don.mirrorMount" -}}
- {name: mirror, mountPath: /etc/don-predictor/mirror, readOnly: true}
{{- end -}}
