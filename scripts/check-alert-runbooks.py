#!/usr/bin/env python3
"""Checks that every alert's `runbook` annotation names a heading of the runbook (GitHub's
anchors: lower case, punctuation dropped, spaces as dashes).

Usage: check-alert-runbooks.py deploy/prometheus/alerts.yml docs/runbook.md
"""
import re
import sys

import yaml


def main(rules, runbook):
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in open(runbook)
        if line.startswith("#")
    }
    alerts = [rule for group in yaml.safe_load(open(rules))["groups"] for rule in group["rules"] if "alert" in rule]
    bad = [
        rule["alert"]
        for rule in alerts
        if rule.get("annotations", {}).get("runbook", "").partition("#")[2] not in anchors
    ]
    if bad:
        sys.exit(f"{rules}: the runbook annotation of {bad} names no heading of {runbook}")
    print(f"{rules}: each of {len(alerts)} alerts' runbook annotation names a heading of {runbook}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
