{{- define "strait-operator.name" -}}
{{- default .Chart.Name .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strait-operator.labels" -}}
app.kubernetes.io/name: strait-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "strait-operator.selector" -}}
app.kubernetes.io/name: strait-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
