#!/usr/bin/env bash
# Checks deploy/prometheus and deploy/grafana without any server (seconds):
# - promtool check config: prometheus.yml (and the rule files it names) parse;
# - promtool check rules + promtool test rules: the alerts parse, and fire when they should
#   and not before (deploy/prometheus/alerts.test.yml);
# - every alert's runbook annotation names a heading of docs/runbook.md;
# - the dashboard's structure (scripts/check-dashboard.py).
# Whether every query is accepted by a real Prometheus and every metric it names exists on the
# services' /metrics is checked by crates/e2e/tests/degradation/prometheus.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
python3 scripts/check-alert-runbooks.py deploy/prometheus/alerts.yml docs/runbook.md
python3 scripts/check-dashboard.py deploy/grafana/dashboards/bookstore.json
