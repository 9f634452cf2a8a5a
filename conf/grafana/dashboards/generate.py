#!/usr/bin/env python3
"""Writes sluice.json, the Grafana dashboard for Sluice, next to this file.

Edit the panels here, run `python3 conf/grafana/dashboards/generate.py`, and
commit both files (CI checks that sluice.json is what this script writes).
Expressions use the template variables $job and $backend and Grafana's
$__rate_interval; CI runs each one against a live Prometheus scraping Sluice.
"""
import json
import os

SHED = ("fleet_saturated|no_healthy_backend|upstream_unavailable|queue_full|"
        "deadline_unmeetable|queue_timeout|displaced|tenant_share")
B = 'job=~"$job",backend=~"$backend"'
J = 'job=~"$job"'
RI = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


def q(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True, "editorMode": "code"}


def timeseries(title, desc, unit, targets, *, thresholds=None, stack=False, minimum=0):
    custom = {
        "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
        "spanNulls": False, "axisPlacement": "auto",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if thresholds else "off"},
    }
    steps = [{"color": "green", "value": None}]
    if thresholds:
        steps += [{"color": "red", "value": v} for v in thresholds]
    defaults = {"unit": unit, "custom": custom,
                "color": {"mode": "palette-classic"},
                "thresholds": {"mode": "absolute", "steps": steps}}
    if minimum is not None:
        defaults["min"] = minimum
    return {
        "type": "timeseries", "title": title, "description": desc,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [q(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
    }


def breaker_timeline(title, desc, expr):
    return {
        "type": "state-timeline", "title": title, "description": desc, "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [
                    {"color": "green", "value": None},
                    {"color": "yellow", "value": 1},
                    {"color": "red", "value": 2}]},
                "mappings": [{"type": "value", "options": {
                    "0": {"text": "closed", "color": "green", "index": 0},
                    "1": {"text": "half-open", "color": "yellow", "index": 1},
                    "2": {"text": "open", "color": "red", "index": 2}}}],
            },
            "overrides": [],
        },
        "options": {
            "mergeValues": True, "showValue": "auto", "alignValue": "left", "rowHeight": 0.9,
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": [q(expr, "{{backend}}", "A")],
    }


def stat(title, desc, unit, expr, red_above):
    return {
        "type": "stat", "title": title, "description": desc, "datasource": DS,
        "fieldConfig": {"defaults": {
            "unit": unit, "color": {"mode": "thresholds"},
            "thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": red_above}]},
        }, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto", "colorMode": "value", "graphMode": "area",
            "justifyMode": "auto", "textMode": "auto", "wideLayout": True,
            "showPercentChange": False, "percentChangeColorMode": "standard",
        },
        "targets": [q(expr, "", "A")],
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantiles(metric, by):
    return [(f'histogram_quantile({p}, sum by ({by}le) (rate({metric}_bucket{{{B}}}[{RI}])))',
             f"p{int(p * 100)} {{{{backend}}}}") for p in (0.5, 0.99)]


PANELS = [
    row("Tokens"),
    timeseries("Prompt tokens/s per backend",
               "Prompt tokens processed per second (cached tokens excluded), from llamacpp:prompt_tokens_total.",
               "short", [(f'max by (backend) (rate(llamacpp:prompt_tokens_total{{{B}}}[{RI}]))', "{{backend}}")],
               stack=True),
    timeseries("Generated tokens/s per backend",
               "Tokens generated per second, from llamacpp:tokens_predicted_total.",
               "short", [(f'max by (backend) (rate(llamacpp:tokens_predicted_total{{{B}}}[{RI}]))', "{{backend}}")],
               stack=True),
    timeseries("Prompt throughput (tokens/s while processing prompts)",
               "prompt tokens / prompt seconds, from the counters. Not llama-server's prompt_tokens_seconds gauge, which resets on every scrape.",
               "short", [(f'max by (backend) (rate(llamacpp:prompt_tokens_total{{{B}}}[{RI}])) / (max by (backend) (rate(llamacpp:prompt_seconds_total{{{B}}}[{RI}])) > 0)', "{{backend}}")]),
    timeseries("Generation throughput (tokens/s per generating request)",
               "generated tokens / generation seconds, from the counters.",
               "short", [(f'max by (backend) (rate(llamacpp:tokens_predicted_total{{{B}}}[{RI}])) / (max by (backend) (rate(llamacpp:tokens_predicted_seconds_total{{{B}}}[{RI}])) > 0)', "{{backend}}")]),
    row("Backends"),
    timeseries("Requests processing per backend",
               "llamacpp:requests_processing: requests holding a slot (never above the slot count).",
               "short", [(f'max by (backend) (llamacpp:requests_processing{{{B}}})', "{{backend}}")]),
    timeseries("Requests deferred per backend",
               "llamacpp:requests_deferred: requests queued inside llama-server. The red line is the first value over "
               "routing.max_deferred (default 0): Sluice skips a backend above it. Edit the threshold if you changed it.",
               "short", [(f'max by (backend) (llamacpp:requests_deferred{{{B}}})', "{{backend}}")],
               thresholds=[1]),
    timeseries("Busy slots per decode",
               "llamacpp:n_busy_slots_per_decode: average number of slots batched in each llama_decode() call.",
               "short", [(f'max by (backend) (llamacpp:n_busy_slots_per_decode{{{B}}})', "{{backend}}")]),
    timeseries("Adaptive limit and in-flight per backend",
               "sluice_backend_limit (AIMD concurrency limit) and sluice_backend_in_flight (requests this gateway has there).",
               "short", [(f'sum by (backend) (sluice_backend_limit{{{B}}})', "limit {{backend}}"),
                         (f'sum by (backend) (sluice_backend_in_flight{{{B}}})', "in flight {{backend}}")]),
    breaker_timeline("Breaker state", "sluice_breaker_state: 0 closed, 1 half-open, 2 open.",
                     f'max by (backend) (sluice_breaker_state{{{B}}})'),
    timeseries("Backend up and eligible",
               "sluice_backend_up (/health answered 200) and sluice_backend_eligible (may take a request now).",
               "short", [(f'min by (backend) (sluice_backend_up{{{B}}})', "up {{backend}}"),
                         (f'min by (backend) (sluice_backend_eligible{{{B}}})', "eligible {{backend}}")]),
    timeseries("Limit changes and breaker transitions",
               "Adaptive limit changes by reason, breaker transitions by new state, per second.",
               "short", [(f'sum by (backend, reason) (rate(sluice_limit_changes_total{{{B}}}[{RI}]))', "limit {{backend}} {{reason}}"),
                         (f'sum by (backend, to) (rate(sluice_breaker_transitions_total{{{B}}}[{RI}]))', "breaker {{backend}} → {{to}}")]),
    timeseries("Scrape age, duration and errors",
               "Age of each backend's latest usable figures, p99 /metrics scrape time, and scrape errors per second by kind.",
               "s", [(f'max by (backend) (sluice_scrape_age_seconds{{{B}}})', "age {{backend}}"),
                     (f'histogram_quantile(0.99, sum by (backend, le) (rate(sluice_scrape_duration_seconds_bucket{{{B}}}[{RI}])))', "p99 scrape {{backend}}"),
                     (f'sum by (backend, kind) (rate(sluice_scrape_errors_total{{{B}}}[{RI}]))', "errors/s {{backend}} {{kind}}")],
               minimum=None),
    row("Gateway"),
    timeseries("Admitted / queued / shed / rate-limited",
               "Requests per second: served by a backend; dispatched from the gateway queue; shed with 503 for lack of "
               "capacity; refused with 429 by the rate limiter.",
               "reqps", [(f'sum(rate(sluice_requests_total{{{J},outcome="served"}}[{RI}]))', "admitted"),
                         (f'sum(rate(sluice_queue_wait_seconds_count{{{J}}}[{RI}]))', "queued"),
                         (f'sum(rate(sluice_requests_total{{{J},outcome="rejected",reason=~"{SHED}"}}[{RI}]))', "shed"),
                         (f'sum(rate(sluice_requests_total{{{J},outcome="rejected",reason="rate_limited"}}[{RI}]))', "rate-limited")]),
    timeseries("Requests by outcome and reason",
               "sluice_requests_total per second by class, outcome and reason (2xx/4xx/5xx or the rejection reason).",
               "reqps", [(f'sum by (class, outcome, reason) (rate(sluice_requests_total{{{J}}}[{RI}]))', "{{class}} {{outcome}} {{reason}}")],
               stack=True),
    stat("Shed share", "Share of inference requests shed (503) over the dashboard's rate interval.", "percentunit",
         f'sum(rate(sluice_requests_total{{{J},class="inference",outcome="rejected",reason=~"{SHED}"}}[{RI}])) '
         f'/ (sum(rate(sluice_requests_total{{{J},class="inference"}}[{RI}])) > 0)', 0.1),
    stat("Ready", "sluice_ready: 1 if some backend can take work now.", "short",
         f'min(sluice_ready{{{J}}})', 2),
    timeseries("Queue depth", "sluice_queue_depth: requests waiting at the gateway for a backend slot.",
               "short", [(f'sum(sluice_queue_depth{{{J}}})', "depth")]),
    timeseries("Queue wait p50 / p99", "Time requests waited in the gateway queue before a backend took them.",
               "s", [(f'histogram_quantile({p}, sum by (le) (rate(sluice_queue_wait_seconds_bucket{{{J}}}[{RI}])))', f"p{int(p * 100)}")
                     for p in (0.5, 0.99)]),
    row("Latency"),
    timeseries("Time to first byte p50 / p99", "From request arrival (queue wait included) to the first response byte.",
               "s", quantiles("sluice_ttft_seconds", "backend, ")),
    timeseries("Request duration p50 / p99", "From request arrival to the end of the response.",
               "s", quantiles("sluice_request_duration_seconds", "backend, ")),
    row("Usage by API key"),
    timeseries("Tokens per minute per key",
               "sluice_key_tokens_total: prompt and completion tokens per minute by API key, from the responses' usage.",
               "short", [(f'sum by (key, kind) (rate(sluice_key_tokens_total{{{J}}}[{RI}])) * 60', "{{key}} {{kind}}")],
               stack=True),
    timeseries("Requests per minute per key",
               "sluice_key_requests_total: inference requests per minute by API key and outcome.",
               "short", [(f'sum by (key, outcome) (rate(sluice_key_requests_total{{{J}}}[{RI}])) * 60', "{{key}} {{outcome}}")],
               stack=True),
]


def layout(panels):
    out, x, y, pid = [], 0, 0, 1
    for p in panels:
        p = dict(p, id=pid)
        pid += 1
        if p["type"] == "row":
            if x:
                y += 8
            x = 0
            p["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            w = 6 if p["type"] == "stat" else 12
            if x + w > 24:
                x, y = 0, y + 8
            p["gridPos"] = {"h": 8, "w": w, "x": x, "y": y}
            x += w
        out.append(p)
    return out


def variable_query(name, label, query, *, multi):
    v = {"type": "query", "name": name, "label": label, "datasource": DS,
         "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "sort": 1, "hide": 0,
         "includeAll": True, "multi": multi, "allValue": ".*",
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": []}
    return v


DASHBOARD = {
    "uid": "sluice-overview",
    "title": "Sluice — llama.cpp fleet",
    "description": "Sluice admission-control gateway and the llama-server fleet behind it (re-exported llamacpp:* series).",
    "tags": ["sluice", "llama.cpp"],
    "timezone": "browser",
    "editable": True,
    "graphTooltip": 1,
    "refresh": "10s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-1h", "to": "now"},
    "fiscalYearStartMonth": 0,
    "liveNow": False,
    "links": [],
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
         "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
         "regex": ""},
        variable_query("job", "Job", "label_values(sluice_ready, job)", multi=True),
        variable_query("backend", "Backend", 'label_values(sluice_backend_up{job=~"$job"}, backend)', multi=True),
    ]},
    "panels": layout(PANELS),
}

if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sluice.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(DASHBOARD, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(path)
