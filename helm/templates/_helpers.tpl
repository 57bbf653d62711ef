{{/*
Names and labels. One release serves one site; "fullname" is the release name (plus the chart
name when the release name does not contain it), so that `helm install cas-eu` gives cas-eu,
cas-eu-headless, cas-eu-redis.
*/}}
{{- define "cas.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cas.headlessName" -}}
{{- printf "%s-headless" (include "cas.fullname" .) -}}
{{- end -}}

{{- define "cas.redisName" -}}
{{- printf "%s-redis" (include "cas.fullname" .) -}}
{{- end -}}

{{- define "cas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cas.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cas.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cas
cas-site: {{ .Values.site.name | quote }}
{{- end -}}

{{/* Selector of this release's node pods. */}}
{{- define "cas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "cas.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "cas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "cas.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The SRV name this site's headless Service publishes (named port "https"). */}}
{{- define "cas.srvName" -}}
{{- printf "_https._tcp.%s.%s.svc.%s" (include "cas.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{- define "cas.redisUrl" -}}
{{- if .Values.redis.internal.enabled -}}
{{- printf "redis://%s.%s.svc.%s:6379/0" (include "cas.redisName" .) .Release.Namespace .Values.clusterDomain -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "cas.peerCASecret" -}}
{{- default .Values.tls.secretName .Values.peerCA.secretName -}}
{{- end -}}

{{/*
Every check that must stop an install with a clear message instead of a pod crash loop.
values.schema.json checks types and the sitemap's shape; this checks what needs more than one
value at a time. Included (and so run) by the Deployment.
*/}}
{{- define "cas.validate" -}}
{{- $site := required "site.name is required: the name of the site this release serves (one of the sitemap's sites, e.g. --set site.name=eu)" .Values.site.name -}}
{{- $_ := required (printf "tls.secretName is required: the name of a Secret (type kubernetes.io/tls) with %s and %s, the certificate of this site's nodes; see docs/deploy-kubernetes.md" .Values.tls.certKey .Values.tls.keyKey) .Values.tls.secretName -}}
{{- if and .Values.sitemap.existingConfigMap .Values.sitemap.content -}}
{{- fail "sitemap: give either sitemap.content or sitemap.existingConfigMap, not both" -}}
{{- end -}}
{{- if and .Values.redis.internal.enabled .Values.redis.url -}}
{{- fail "redis: give either redis.url (an external Redis) or redis.internal.enabled, not both" -}}
{{- end -}}
{{- if and .Values.redis.passwordKey (not .Values.credentials.secretName) -}}
{{- fail "redis.passwordKey needs credentials.secretName: the Secret that holds that key" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling: minReplicas (%v) is greater than maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) -}}
{{- end -}}
{{- if not .Values.sitemap.existingConfigMap -}}
{{- $content := .Values.sitemap.content -}}
{{- if not $content.sites -}}
{{- fail "sitemap.content: the organisation's sitemap (docs/sitemap.md) with at least one site is required, or sitemap.existingConfigMap" -}}
{{- end -}}
{{- $names := list -}}
{{- range $i, $s := $content.sites -}}
{{- if has $s.name $names -}}
{{- fail (printf "sitemap.content: sites[%d]: name: site %q is defined twice" $i $s.name) -}}
{{- end -}}
{{- $names = append $names $s.name -}}
{{- end -}}
{{- if not (has $site $names) -}}
{{- fail (printf "site.name: %q is not a site of sitemap.content (sites: %s)" $site (join ", " $names)) -}}
{{- end -}}
{{- range $i, $m := $content.mailboxes -}}
{{- if not (has $m.site $names) -}}
{{- fail (printf "sitemap.content: mailboxes[%d] (%s): site: no site named %q (sites: %s)" $i $m.address $m.site (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- range $i, $s := $content.sites -}}
{{- range $other, $cost := $s.costs -}}
{{- if not (has $other $names) -}}
{{- fail (printf "sitemap.content: sites[%d] (%s): costs.%s: no site named %q (sites: %s)" $i $s.name $other $other (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (gt (len $names) 1) (not .Values.clusterSecret.secretName) -}}
{{- fail (printf "clusterSecret.secretName is required: the sitemap has %d sites, and nodes sign requests to other sites with the cluster secret (docs/trust.md)" (len $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The sitemap as stored in the ConfigMap: sitemap.content with this site's `srv` filled in (when
it names neither `srv` nor `nodes`) and its `redis` taken from redis.url / redis.internal.
*/}}
{{- define "cas.sitemap" -}}
{{- $doc := deepCopy .Values.sitemap.content -}}
{{- $redisUrl := include "cas.redisUrl" . -}}
{{- $sites := list -}}
{{- range $doc.sites -}}
{{- $s := . -}}
{{- if eq $s.name $.Values.site.name -}}
{{- if and (not $s.srv) (not $s.nodes) -}}
{{- $_ := set $s "srv" (include "cas.srvName" $) -}}
{{- end -}}
{{- if $redisUrl -}}
{{- if $.Values.redis.passwordKey -}}
{{- $_ := set $s "redis" (dict "url" $redisUrl "password_file" (printf "%s/%s" $.Values.credentials.mountPath $.Values.redis.passwordKey)) -}}
{{- else -}}
{{- $_ := set $s "redis" $redisUrl -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $sites = append $sites $s -}}
{{- end -}}
{{- $_ := set $doc "sites" $sites -}}
{{- toYaml $doc -}}
{{- end -}}
