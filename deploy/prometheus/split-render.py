#!/usr/bin/env python3
"""Splits the chart's "monitoring" render for the outside tools (deploy/lint-charts.sh):

    split-render.py RENDER.yaml OUTDIR RUNBOOK.md

writes OUTDIR/core.yaml (every object but the Prometheus Operator's, for
kubernetes-validate), OUTDIR/rules.yaml (the PrometheusRule's groups, for `promtool check
rules` / `promtool test rules`) and OUTDIR/dashboard-rules.yaml (each dashboard query as a
recording rule, so `promtool check rules` parses every PromQL expression of the dashboard;
Grafana's $namespace and $__rate_interval replaced by values). Fails naming what is
missing: no ServiceMonitor, PrometheusRule or dashboard, an alert without a runbook
section, a dashboard panel without a query.
"""

import json
import re
import sys

import yaml


def main() -> int:
    render, out, runbook_path = sys.argv[1:4]
    docs = [d for d in yaml.safe_load_all(open(render)) if d]
    crds = [d for d in docs if d.get("apiVersion", "").startswith("monitoring.coreos.com/")]
    core = [d for d in docs if d not in crds]
    kinds = sorted(d["kind"] for d in crds)
    if kinds != ["PrometheusRule", "ServiceMonitor"]:
        sys.exit(f"expected one ServiceMonitor and one PrometheusRule, found {kinds}")
    with open(f"{out}/core.yaml", "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)

    rule = next(d for d in crds if d["kind"] == "PrometheusRule")
    with open(f"{out}/rules.yaml", "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    runbook = open(runbook_path).read()
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    missing = [a for a in alerts if not re.search(rf"^## {a}\b", runbook, re.M)]
    if missing:
        sys.exit(f"alerts without a '## <name>' section in {runbook_path}: {', '.join(missing)}")
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            url = r.get("annotations", {}).get("runbook_url", "")
            if not url.endswith("#" + r["alert"].lower()):
                sys.exit(f"{r['alert']}: runbook_url {url!r} does not point at its section")

    boards = [d for d in core if d["kind"] == "ConfigMap" and any(k.endswith(".json") for k in d.get("data", {}))]
    if not boards:
        sys.exit("no dashboard ConfigMap in the render")
    recording = []
    for cm in boards:
        for key, text in cm["data"].items():
            board = json.loads(text)
            for panel in board.get("panels", []):
                targets = panel.get("targets", [])
                if not targets:
                    sys.exit(f"{key}: panel {panel.get('title')!r} has no query")
                for t in targets:
                    expr = t["expr"].replace("$__rate_interval", "5m").replace("$namespace", "cloudmart")
                    if "$" in expr:
                        sys.exit(f"{key}: panel {panel.get('title')!r}: unresolved variable in {t['expr']!r}")
                    recording.append({"record": f"dashboard:panel_{panel['id']}_{t['refId'].lower()}", "expr": expr})
    with open(f"{out}/dashboard-rules.yaml", "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}, f, sort_keys=False)
    print(f"{len(core)} core objects, {len(alerts)} alerts (each with a runbook section), {len(recording)} dashboard queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
