{{/* The name of every object: egress-authz unless overridden. */}}
{{- define "egress-authz.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "egress-authz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: the same as the kustomize base's. */}}
{{- define "egress-authz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "egress-authz.name" . }}
{{- end -}}

{{- define "egress-authz.labels" -}}
{{ include "egress-authz.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The gateway's identity as an Istio principal (trust domain/ns/NS/sa/SA). */}}
{{- define "egress-authz.gatewayPrincipal" -}}
{{- with .Values.gateway -}}
{{ .trustDomain }}/ns/{{ .namespace }}/sa/{{ .serviceAccount }}
{{- end -}}
{{- end -}}

{{/* GOMEMLIMIT in bytes: goMemLimitPercent of resources.limits.memory. */}}
{{- define "egress-authz.gomemlimit" -}}
{{- $q := toString (dig "limits" "memory" "" .Values.resources) -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- if not $num -}}
{{- fail (printf "resources.limits.memory %q: not a quantity" $q) -}}
{{- end -}}
{{- $unit := trimPrefix $num $q -}}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 -}}
{{- if not (hasKey $units $unit) -}}
{{- fail (printf "resources.limits.memory %q: unit %q is not one of k M G T Ki Mi Gi Ti" $q $unit) -}}
{{- end -}}
{{- $bytes := mulf (float64 $num) (get $units $unit) (float64 .Values.goMemLimitPercent) -}}
{{- printf "%d" (int64 (floor (divf $bytes 100))) -}}
{{- end -}}

{{/* The host of a URL (https://HOST/..., oci://HOST/...). */}}
{{- define "egress-authz.urlHost" -}}
{{- regexReplaceAll "^[a-z0-9]+://([^/:]+).*$" . "${1}" -}}
{{- end -}}

{{/* BUCKET of s3://BUCKET/PREFIX. */}}
{{- define "egress-authz.bucket" -}}
{{- regexReplaceAll "^s3://([^/]+).*$" . "${1}" -}}
{{- end -}}
