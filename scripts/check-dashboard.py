#!/usr/bin/env python3
"""Checks a Grafana dashboard JSON without Grafana (not installable here): the structure Grafana
needs to load it, that every query uses the provisioned datasource, and that it shows what the
runbook promises. Whether Prometheus accepts each query, and whether the metrics exist on the
services, is checked by crates/e2e/tests/degradation/prometheus.rs.

Usage: check-dashboard.py deploy/grafana/dashboards/bookstore.json
"""
import json
import pathlib
import sys

import yaml

# What the dashboard must show (docs/runbook.md, Alerts and dashboard): a metric per subject.
REQUIRED = {
    "X-Cache mix": "booksvc_cache_results_total",
    "breaker state": "booksvc_breaker_state",
    "latency per route": "booksvc_http_request_duration_seconds_bucket",
    "outbox backlog": "storagesvc_outbox_backlog",
    "outbox oldest age": "storagesvc_outbox_oldest_age_seconds",
    "consumer state": "booksvc_consumer_state",
    "event lag": "booksvc_consumer_event_lag_seconds_bucket",
    "retries": "booksvc_storagesvc_retries_total",
    "event retries": "booksvc_consumer_retried_total",
    "DLQ depth": "rabbitmq_detailed_queue_messages",
}


def main(path):
    errors = []
    dashboard = json.loads(pathlib.Path(path).read_text())
    root = pathlib.Path(path).resolve().parents[1]
    datasources = yaml.safe_load((root / "provisioning/datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"]}

    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            errors.append(f"no {key!r}")
    ids, exprs = set(), []
    for panel in dashboard.get("panels", []):
        name = panel.get("title") or f"panel {panel.get('id')}"
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            errors.append(f"{name}: missing or repeated id")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid["x"] + grid["w"] > 24:
            errors.append(f"{name}: gridPos needs integer x, y, w, h within 24 columns")
        if not panel.get("type"):
            errors.append(f"{name}: no type")
        targets = panel.get("targets") or []
        if not targets:
            errors.append(f"{name}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            errors.append(f"{name}: refIds missing or repeated")
        for target in [panel] + targets:
            uid = (target.get("datasource") or {}).get("uid")
            if uid not in uids:
                errors.append(f"{name}: datasource uid {uid!r} is not a provisioned one {sorted(uids)}")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                errors.append(f"{name}: empty expr")
            if expr.count("(") != expr.count(")"):
                errors.append(f"{name}: unbalanced parentheses in {expr}")
            exprs.append(expr)
    text = "\n".join(exprs)
    for subject, metric in REQUIRED.items():
        if metric not in text:
            errors.append(f"shows no {subject} ({metric})")

    for error in errors:
        print(f"{path}: {error}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"{path}: {len(ids)} panels, {len(exprs)} queries, structure OK")


if __name__ == "__main__":
    main(sys.argv[1])
