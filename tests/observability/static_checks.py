#!/usr/bin/env python3
"""Checks of the shipped files that need no running service.

  python3 static_checks.py compose     conf/docker-compose.yml is well-formed and consistent
  python3 static_checks.py annotations every alert has summary, description and a runbook
                                       anchor that exists in README.md's Monitoring section
  python3 static_checks.py coverage    every recording rule and alert has a promtool unit test
                                       (alerts: firing and not firing)
  python3 static_checks.py dashboard   sluice.json is what generate.py writes
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def compose():
    d = yaml.safe_load((CONF / "docker-compose.yml").read_text())
    assert isinstance(d, dict) and "services" in d, "no services"
    need = {"sluice", "prometheus", "grafana", "alertmanager"}
    assert need <= set(d["services"]), f"missing services {need - set(d['services'])}"
    for name, s in d["services"].items():
        assert "image" in s or "build" in s, f"{name}: no image or build"
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./") or src.startswith("../"):
                assert (CONF / src).exists(), f"{name}: mounted {src} does not exist"
        for dep in s.get("depends_on", []):
            assert dep in d["services"], f"{name}: depends on unknown {dep}"
    # Grafana's dashboard provider reads the directory the compose file mounts.
    prov = yaml.safe_load((CONF / "grafana/provisioning/dashboards/sluice.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    mounts = [v.split(":")[1] for v in d["services"]["grafana"]["volumes"]]
    assert path in mounts, f"dashboard provider path {path} not mounted in grafana"
    ds = yaml.safe_load((CONF / "grafana/provisioning/datasources/sluice-prometheus.yml").read_text())
    prom_addr = next(a.split("=")[1] for a in d["services"]["prometheus"]["command"]
                     if a.startswith("--web.listen-address="))
    assert prom_addr in ds["datasources"][0]["url"], "datasource URL is not the compose Prometheus address"
    return f"{len(d['services'])} services, mounts exist, provisioning paths agree"


def alerts():
    doc = yaml.safe_load((CONF / "prometheus/rules/alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def recordings():
    doc = yaml.safe_load((CONF / "prometheus/rules/recording.yml").read_text())
    return [r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r]


def annotations():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"(?ms)^## Monitoring\n(.*?)(?=^## |\Z)", readme)
    assert m, "README.md has no '## Monitoring' section"
    section = m.group(1)
    headings = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"(?m)^#{2,6} (.+)$", section)}
    bad = []
    for r in alerts():
        a = r.get("annotations", {})
        for k in ("summary", "description", "runbook"):
            if not a.get(k):
                bad.append(f"{r['alert']}: no {k}")
        anchor = a.get("runbook", "").partition("#")[2]
        if anchor not in headings:
            bad.append(f"{r['alert']}: runbook anchor #{anchor} is not a heading in README's Monitoring section")
        if "severity" not in r.get("labels", {}):
            bad.append(f"{r['alert']}: no severity label")
    assert not bad, "; ".join(bad)
    return f"{len(alerts())} alerts annotated, runbook anchors resolve"


def coverage():
    tests = yaml.safe_load((ROOT / "tests/observability/recording.test.yml").read_text())
    tested = set()
    for t in tests["tests"]:
        for e in t.get("promql_expr_test", []):
            if e.get("exp_samples"):
                tested.update(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", e["expr"]))
    missing = [n for n in recordings() if n not in tested]
    tests = yaml.safe_load((ROOT / "tests/observability/alerts.test.yml").read_text())
    firing, quiet = set(), set()
    for t in tests["tests"]:
        for e in t.get("alert_rule_test", []):
            (firing if e.get("exp_alerts") else quiet).add(e["alertname"])
    for r in alerts():
        if r["alert"] not in firing:
            missing.append(f"{r['alert']} (firing)")
        if r["alert"] not in quiet:
            missing.append(f"{r['alert']} (not firing)")
    assert not missing, "untested: " + ", ".join(missing)
    return f"{len(recordings())} recording rules and {len(alerts())} alerts (firing + not firing) have unit tests"


def dashboard():
    path = CONF / "grafana/dashboards/sluice.json"
    before = path.read_text()
    try:
        subprocess.run([sys.executable, str(CONF / "grafana/dashboards/generate.py")],
                       check=True, capture_output=True)
        after = path.read_text()
    finally:
        path.write_text(before)
    assert before == after, "conf/grafana/dashboards/sluice.json differs from generate.py's output: regenerate it"
    d = json.loads(before)
    return f"sluice.json matches generate.py ({len(d['panels'])} panels)"


if __name__ == "__main__":
    fn = {"compose": compose, "annotations": annotations, "coverage": coverage,
          "dashboard": dashboard}.get(sys.argv[1] if len(sys.argv) > 1 else "")
    if not fn:
        sys.exit(__doc__)
    try:
        print(fn())
    except AssertionError as e:
        print(e)
        sys.exit(1)
