{{/*
The alerting and recording rules, as Prometheus rule groups. The
PrometheusRule renders them; deploy/prometheus/egress-authz.rules.yaml is
their render with the default values, for a Prometheus without the
operator (a test keeps it in step). Each alert has a section in
docs/runbooks.md.
*/}}
{{- define "egress-authz.ruleGroups" -}}
{{- $v := .Values.prometheusRule -}}
{{- $rb := $v.runbookURL -}}
- name: egress-authz.recording
  rules:
    - record: egress_authz:check_duration_seconds:p99_5m
      expr: histogram_quantile(0.99, sum by (namespace, le) (rate(egress_authz_check_duration_seconds_bucket[5m])))
    - record: egress_authz:decisions:rate5m
      expr: sum by (namespace, decision, reason) (rate(egress_authz_decisions_total[5m]))
- name: egress-authz.alerts
  rules:
    - alert: EgressAuthzDecisionLogSinkFailing
      expr: max by (namespace, pod, sink) (egress_authz_audit_sink_failing) == 1
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: 'Decision-log sink {{`{{ $labels.sink }}`}} of {{`{{ $labels.pod }}`}} fails its writes'
        description: Records wait in the pod's write-ahead log; when its buffer is full, Checks are denied audit-unavailable.
        runbook_url: {{ $rb }}#egressauthzdecisionlogsinkfailing
    - alert: EgressAuthzDecisionLogSinkBehind
      expr: min by (namespace, pod, sink) (min_over_time(egress_authz_audit_sink_behind_records[15m])) > {{ $v.sinkBehindRecords }}
      labels:
        severity: warning
      annotations:
        summary: 'Decision-log sink {{`{{ $labels.sink }}`}} of {{`{{ $labels.pod }}`}} has been {{`{{ $value }}`}} records behind for 15 minutes'
        description: The sink stores fewer records than the pod decides; the write-ahead log grows towards --audit-buffer.
        runbook_url: {{ $rb }}#egressauthzdecisionlogsinkbehind
    - alert: EgressAuthzDecisionLogOverflow
      expr: >-
        sum by (namespace, pod) (increase(egress_authz_decisions_total{reason="audit-unavailable"}[5m])) > 0
        or sum by (namespace, pod) (increase(egress_authz_audit_overflows_total[5m])) > 0
      labels:
        severity: critical
      annotations:
        summary: '{{`{{ $labels.pod }}`}} denies requests because its decision log is full (audit-unavailable)'
        description: The decision-log buffer is full; with --audit-overflow deny new requests are denied, with block they wait and time out.
        runbook_url: {{ $rb }}#egressauthzdecisionlogoverflow
    - alert: EgressAuthzRuleReloadFailing
      expr: max by (namespace, pod) (egress_authz_rules_last_reload_failed) == 1
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: '{{`{{ $labels.pod }}`}} refused a rule change; the previous rule set still serves'
        description: The last reload failed (an invalid rule file, or a bundle that failed verification). /v1/rules shows the error.
        runbook_url: {{ $rb }}#egressauthzrulereloadfailing
    - alert: EgressAuthzRuleSetArchivePending
      expr: max by (namespace, pod) (egress_authz_ruleset_archive_pending) > 0
      for: 15m
      labels:
        severity: warning
      annotations:
        summary: '{{`{{ $labels.pod }}`}} has {{`{{ $value }}`}} served rule-set versions not yet in its decision-log store'
        description: The versions are kept in the pod's data directory and retried; if the pod goes first, reports and explain --version cannot show those rules as they were.
        runbook_url: {{ $rb }}#egressauthzrulesetarchivepending
    - alert: EgressAuthzRuleExpiringSoon
      expr: min by (namespace) (egress_authz_rules_next_expiry_timestamp_seconds > 0) - time() < {{ $v.ruleExpiryDays }} * 86400
      for: 1h
      labels:
        severity: info
      annotations:
        summary: 'A rule in {{`{{ $labels.namespace }}`}} expires in {{`{{ $value | humanizeDuration }}`}}'
        description: An expired rule stops matching; what it allowed is then denied. rules lint names the rule.
        runbook_url: {{ $rb }}#egressauthzruleexpiringsoon
    - alert: EgressAuthzRuleBundleExpiringSoon
      expr: min by (namespace) (egress_authz_rules_bundle_expiry_timestamp_seconds > 0) - time() < {{ $v.bundleExpiryDays }} * 86400
      for: 1h
      labels:
        severity: warning
      annotations:
        summary: 'The rule bundle served in {{`{{ $labels.namespace }}`}} expires in {{`{{ $value | humanizeDuration }}`}}'
        description: New pods refuse an expired bundle; CI must publish a new one.
        runbook_url: {{ $rb }}#egressauthzrulebundleexpiringsoon
    - alert: EgressAuthzRuleBundleSourceStale
      expr: time() - max by (namespace, pod) (egress_authz_rules_last_check_timestamp_seconds > 0) > 300
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: '{{`{{ $labels.pod }}`}} has not asked the bundle registry for {{`{{ $value | humanizeDuration }}`}}'
        description: A new bundle does not reach this replica.
        runbook_url: {{ $rb }}#egressauthzrulebundlesourcestale
    - alert: EgressAuthzInvalidOrUntrustedDenies
      expr: sum by (namespace, reason) (rate(egress_authz_decisions_total{decision="deny", reason=~"invalid-request|untrusted-trust-domain"}[10m])) > {{ $v.denyRatePerSecond }}
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: '{{`{{ $value | humanize }}`}} denies/s with reason {{`{{ $labels.reason }}`}} in {{`{{ $labels.namespace }}`}}'
        description: Requests the gateway sends are malformed (invalid-request) or carry identities from a trust domain the rules do not trust (untrusted-trust-domain).
        runbook_url: {{ $rb }}#egressauthzinvalidoruntrusteddenies
    - alert: EgressAuthzCheckLatencyHigh
      expr: egress_authz:check_duration_seconds:p99_5m > {{ $v.checkLatencyP99Seconds }}
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: 'Check p99 latency in {{`{{ $labels.namespace }}`}} is {{`{{ $value | humanizeDuration }}`}}'
        description: 'The 99th percentile of decision time is over the budget of {{ $v.checkLatencyP99Seconds }} s (the provider times out at 1 s).'
        runbook_url: {{ $rb }}#egressauthzchecklatencyhigh
    - alert: EgressAuthzServingCertificateExpiringSoon
      expr: min by (namespace, pod) (egress_authz_serving_certificate_expiry_timestamp_seconds > 0) - time() < {{ $v.certificateExpiryMinutes }} * 60
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: 'The serving certificate of {{`{{ $labels.pod }}`}} expires in {{`{{ $value | humanizeDuration }}`}}'
        description: Once it has expired the gateway's handshakes fail and every request it carries gets a 503.
        runbook_url: {{ $rb }}#egressauthzservingcertificateexpiringsoon
    - alert: EgressAuthzNoChecks
      expr: sum by (namespace) (increase(egress_authz_decisions_total[{{ $v.noChecksFor }}])) == 0
      for: 5m
      labels:
        severity: warning
      annotations:
        summary: 'egress-authz in {{`{{ $labels.namespace }}`}} decided no Check for {{ $v.noChecksFor }}'
        description: The egress gateway may no longer ask egress-authz (a CUSTOM policy or extensionProvider lost), or no traffic leaves the mesh.
        runbook_url: {{ $rb }}#egressauthznochecks
    - alert: EgressAuthzMetricsAbsent
      expr: absent_over_time(egress_authz_rules_generation[{{ $v.noChecksFor }}])
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: 'No egress-authz replica has been scraped for {{ $v.noChecksFor }}'
        description: Every replica is gone, crash-looping or unscraped; the other alerts, which need their metrics, cannot fire. The gateway's Checks fail closed.
        runbook_url: {{ $rb }}#egressauthzmetricsabsent
{{- end -}}
