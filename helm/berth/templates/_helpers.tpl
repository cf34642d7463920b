{{- define "berth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "berth.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "berth.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The store URL the control plane gets (--store); empty for the embedded store. */}}
{{- define "berth.storeUrl" -}}
{{- if eq .Values.store.mode "etcd" -}}
{{- if .Values.etcd.enabled -}}
{{- $full := include "berth.fullname" . -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s-etcd-%d.%s-etcd:2379" $full $i $full) -}}
{{- end -}}
{{- printf "etcd://%s" (join "," $eps) -}}
{{- else -}}
{{- required "store.mode etcd needs etcd.enabled or etcd.external.url" .Values.etcd.external.url -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "berth.joinTokenSecret" -}}
{{- if .Values.agent.joinToken -}}{{ include "berth.fullname" . }}-join-token{{- else -}}{{ default (printf "%s-join-token" (include "berth.fullname" .)) .Values.agent.joinTokenSecret }}{{- end -}}
{{- end -}}

{{- define "berth.adminTokenSecret" -}}
{{- if .Values.adminToken -}}{{ include "berth.fullname" . }}-admin-token{{- else -}}{{ default (printf "%s-admin-token" (include "berth.fullname" .)) .Values.adminTokenSecret }}{{- end -}}
{{- end -}}
