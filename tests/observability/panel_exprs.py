#!/usr/bin/env python3
"""The PromQL expressions of conf/grafana/dashboards/*.json, with Grafana's
template variables replaced by values Prometheus accepts.

  python3 panel_exprs.py rules OUT.yml   # a rules file for `promtool check rules`
  python3 panel_exprs.py list            # panel / ref / expression, one a line

$job and $backend become `.*` (the "All" value), $__rate_interval `1m`.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBST = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".*",
    "$backend": ".*",
}


def substitute(expr):
    for k in sorted(SUBST, key=len, reverse=True):
        expr = expr.replace(k, SUBST[k])
        expr = expr.replace("${" + k[1:] + "}", SUBST[k])
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise SystemExit(f"unknown template variable {left} in {expr}")
    return expr


def expressions():
    """(dashboard file, panel title, refId, expression) for every query."""
    out = []
    for path in sorted((ROOT / "conf/grafana/dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((path.name, p["title"], t["refId"], substitute(t["expr"])))
    return out


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "list"
    exprs = expressions()
    if cmd == "list":
        for f, title, ref, e in exprs:
            print(f"{f}\t{title}\t{ref}\t{e}")
    elif cmd == "rules":
        rules = [{"record": f"dashboard:panel_{i}:check", "expr": e}
                 for i, (_, _, _, e) in enumerate(exprs)]
        doc = {"groups": [{"name": "dashboard-expressions", "rules": rules}]}
        # JSON is YAML: no PyYAML needed here.
        pathlib.Path(sys.argv[2]).write_text(json.dumps(doc, indent=1))
        print(f"{len(rules)} expressions")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
