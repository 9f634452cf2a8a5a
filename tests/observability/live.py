#!/usr/bin/env python3
"""Live checks with the real tools, loopback only, bounded in time.

Starts two simulated llama-servers (`sluice sim`), a Sluice gateway in front
of them, a real Prometheus (1 s scrapes, the shipped recording rules and the
shipped alert rules with every `for:` cut to 0s), a real Alertmanager whose
routing tree is the shipped one with each receiver replaced by a webhook, and
a local webhook receiver. Then it loads the gateway for ~20 s (an API key
that is served, one that is rate limited, more clients than slots so the
queue and shedding work) and checks:

  live-panels     every Grafana panel expression returns at least one series
  live-recording  every recording rule produces at least one series
  alert-e2e       SluiceGatewayDown (a dead target in job "sluice") fires in
                  Prometheus, passes through Alertmanager's routing and reaches
                  the webhook of the receiver routed for severity=critical

Prints one `PASS name` / `FAIL name: why` line per check; exits 1 on failure.
Every process it starts is killed on exit.

  python3 tests/observability/live.py [--sluice target/debug/sluice] [--load-secs 20]
"""
import argparse
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import panel_exprs  # noqa: E402

try:
    import yaml
except ImportError:  # Debian: apt-get install python3-yaml
    sys.exit("FAIL live: python3 yaml module missing (apt-get install python3-yaml)")

PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv, logdir):
    log = open(os.path.join(logdir, name + ".log"), "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    PROCS.append((name, p))
    return p


def stop_all():
    for _, p in reversed(PROCS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for _, p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    PROCS.clear()


def wait_http(url, deadline, ok=(200,)):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in ok:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Webhook(http.server.BaseHTTPRequestHandler):
    received = []  # (path, payload)
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with Webhook.lock:
            Webhook.received.append((self.path, json.loads(body or b"{}")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def gateway_config(proxy, admin, sims):
    backends = "".join(f'[[backends]]\nname = "llm-{i}"\nurl = "http://127.0.0.1:{p}"\n\n'
                       for i, p in enumerate(sims))
    return f"""[server]
listen = "127.0.0.1:{proxy}"
grace_period = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[scrape]
interval = "250ms"

{backends}[queue]
capacity = 6
max_wait = "3s"

[rate_limit]
enabled = true
requests_per_minute = 100000
burst = 1000

[[rate_limit.overrides]]
key = "batch"
requests_per_minute = 6
burst = 1

[[api_keys]]
name = "team-a"
key = "sk-live-team-a-0001"

[[api_keys]]
name = "batch"
key = "sk-live-batch-0001"
"""


def load(proxy, stop, stats):
    """One client: sends completions until stop is set."""
    rnd = random.Random(threading.get_ident())
    while not stop.is_set():
        key = "sk-live-batch-0001" if rnd.random() < 0.15 else "sk-live-team-a-0001"
        body = {"prompt": "x " * rnd.randint(8, 64), "n_predict": rnd.randint(8, 48)}
        path = "/completion"
        if rnd.random() < 0.3:
            path = "/v1/chat/completions"
            body = {"messages": [{"role": "user", "content": "hi " * rnd.randint(4, 32)}],
                    "max_tokens": rnd.randint(8, 48)}
        req = urllib.request.Request(f"http://127.0.0.1:{proxy}{path}", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
            e.read()
        except (urllib.error.URLError, OSError):
            code = 0
        with stats["lock"]:
            stats[code] = stats.get(code, 0) + 1
        if code in (429, 503):
            time.sleep(0.05)


def prom_query(prom, expr):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        r = get_json(url)
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read()[:200]!r}"
    except OSError as e:
        return None, str(e)
    if r.get("status") != "success":
        return None, r.get("error", "query failed")
    return r["data"]["result"], None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", default=os.path.join(ROOT, "target/debug/sluice"))
    ap.add_argument("--load-secs", type=float, default=20)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args()

    for tool in ("prometheus", "prometheus-alertmanager"):
        if not shutil.which(tool):
            alt = "alertmanager" if tool == "prometheus-alertmanager" else None
            if not (alt and shutil.which(alt)):
                print(f"FAIL live: {tool} not installed")
                return 1
    amtool_bin = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

    tmp = tempfile.mkdtemp(prefix="sluice-obs-")
    results = {}
    t0 = time.time()

    def handle(sig, _frame):
        stop_all()
        sys.exit(128 + sig)
    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    hook_srv = None
    try:
        proxy, admin, prom, am, hook, dead = (free_port() for _ in range(6))
        sims = [free_port(), free_port()]

        # Webhook receiver (in this process).
        hook_srv = http.server.ThreadingHTTPServer(("127.0.0.1", hook), Webhook)
        threading.Thread(target=hook_srv.serve_forever, daemon=True).start()

        # Gateway first: its first scrapes fail (connection refused), which
        # gives the scrape-error, limit-change and breaker series something to show.
        cfg = os.path.join(tmp, "sluice.toml")
        with open(cfg, "w") as f:
            f.write(gateway_config(proxy, admin, sims))
        start("sluice", [args.sluice, "run", "--config", cfg, "--run-dir", os.path.join(tmp, "run")], tmp)
        if not wait_http(f"http://127.0.0.1:{admin}/healthz", time.time() + 15):
            raise RuntimeError("gateway admin listener did not come up (see sluice.log)")
        time.sleep(1.0)
        for i, port in enumerate(sims):
            start(f"sim{i}", [args.sluice, "sim", "--listen", f"127.0.0.1:{port}", "--slots", "2",
                              "--gen-tps", "150", "--gen-len", "8..48", "--seed", str(i + 1)], tmp)

        # Alertmanager: the shipped routing tree, receivers replaced by webhooks.
        shipped = yaml.safe_load(open(os.path.join(ROOT, "conf/alertmanager/alertmanager.yml")))
        route = shipped["route"]

        def fast(r):
            r = dict(r)
            for k in ("group_wait", "group_interval"):
                if k in r:
                    r[k] = "1s"
            if "routes" in r:
                r["routes"] = [fast(x) for x in r["routes"]]
            return r
        route = fast(route)
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
        am_cfg = {
            "route": route,
            "inhibit_rules": shipped.get("inhibit_rules", []),
            "receivers": [{"name": r["name"], "webhook_configs": [
                {"url": f"http://127.0.0.1:{hook}/{r['name']}", "send_resolved": False}]}
                for r in shipped["receivers"]],
        }
        am_path = os.path.join(tmp, "alertmanager.yml")
        with open(am_path, "w") as f:
            yaml.safe_dump(am_cfg, f)
        start("alertmanager", [amtool_bin, f"--config.file={am_path}",
                               f"--storage.path={os.path.join(tmp, 'am-data')}",
                               f"--web.listen-address=127.0.0.1:{am}",
                               "--cluster.listen-address="], tmp)

        # Prometheus: shipped rules (alerts with for: 0s so they fire in seconds).
        rules_dir = os.path.join(tmp, "rules")
        os.makedirs(rules_dir)
        shutil.copy(os.path.join(ROOT, "conf/prometheus/rules/recording.yml"), rules_dir)
        alerts = open(os.path.join(ROOT, "conf/prometheus/rules/alerts.yml")).read()
        alerts = re.sub(r"(?m)^(\s+for:)\s*\S+", r"\1 0s", alerts)
        with open(os.path.join(rules_dir, "alerts.yml"), "w") as f:
            f.write(alerts)
        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(rules_dir, "recording.yml"), os.path.join(rules_dir, "alerts.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am}"]}]}]},
            "scrape_configs": [{
                "job_name": "sluice", "scrape_timeout": "900ms",
                # the second target is a port nobody listens on: "a gateway down"
                "static_configs": [{"targets": [f"127.0.0.1:{admin}", f"127.0.0.1:{dead}"]}],
            }],
        }
        prom_path = os.path.join(tmp, "prometheus.yml")
        with open(prom_path, "w") as f:
            yaml.safe_dump(prom_cfg, f)
        start("prometheus", ["prometheus", f"--config.file={prom_path}",
                             f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                             f"--web.listen-address=127.0.0.1:{prom}"], tmp)
        if not wait_http(f"http://127.0.0.1:{prom}/-/ready", time.time() + 20):
            raise RuntimeError("prometheus did not become ready (see prometheus.log)")
        if not wait_http(f"http://127.0.0.1:{am}/-/ready", time.time() + 20):
            raise RuntimeError("alertmanager did not become ready (see alertmanager.log)")
        if not wait_http(f"http://127.0.0.1:{admin}/readyz", time.time() + 15):
            raise RuntimeError("gateway never became ready (see sluice.log, sim*.log)")

        # Load.
        stop = threading.Event()
        stats = {"lock": threading.Lock()}
        workers = [threading.Thread(target=load, args=(proxy, stop, stats), daemon=True)
                   for _ in range(args.clients)]
        for w in workers:
            w.start()
        time.sleep(args.load_secs)
        # Keep the load on while querying, so gauges are non-trivial.
        codes = {k: v for k, v in stats.items() if k != "lock"}
        print(f"load: {args.clients} clients for {args.load_secs:.0f}s, responses by status {codes}")

        # live-panels
        empty = []
        nan_only = []
        exprs = panel_exprs.expressions()
        for fname, title, ref, expr in exprs:
            res, err = prom_query(prom, expr)
            if err or not res:
                empty.append(f"{title} [{ref}]: {err or 'no series'} :: {expr}")
            elif all(s["value"][1] in ("NaN", "+Inf", "-Inf") for s in res):
                nan_only.append(f"{title} [{ref}]")
        if nan_only:
            print(f"note: only NaN/Inf values (series exist) for: {', '.join(nan_only)}")
        results["live-panels"] = (not empty, f"{len(exprs) - len(empty)}/{len(exprs)} panel expressions returned data"
                                  + ("".join("\n    no data: " + e for e in empty)))

        # live-recording
        rec = yaml.safe_load(open(os.path.join(ROOT, "conf/prometheus/rules/recording.yml")))
        names = [r["record"] for g in rec["groups"] for r in g["rules"] if "record" in r]
        missing = []
        for n in names:
            res, err = prom_query(prom, n)
            if err or not res:
                missing.append(f"{n}: {err or 'no series'}")
        results["live-recording"] = (not missing, f"{len(names) - len(missing)}/{len(names)} recording rules produced series"
                                     + "".join("\n    no data: " + m for m in missing))

        # alert-e2e: wait (bounded) for the webhook.
        critical_rx = [r["receiver"] for r in shipped["route"].get("routes", [])
                       if any('severity="critical"' in m for m in r.get("matchers", []))]
        want_path = "/" + (critical_rx[0] if critical_rx else shipped["route"]["receiver"])
        deadline = time.time() + 30
        got = None
        while time.time() < deadline and got is None:
            with Webhook.lock:
                for path, payload in Webhook.received:
                    for a in payload.get("alerts", []):
                        if a.get("labels", {}).get("alertname") == "SluiceGatewayDown" and path == want_path:
                            got = (path, a)
            time.sleep(0.5)
        stop.set()
        if got:
            a = got[1]
            detail = (f"SluiceGatewayDown for {a['labels'].get('instance')} reached webhook {got[0]} via "
                      f"Alertmanager (runbook {a.get('annotations', {}).get('runbook')})")
            ok = all(a.get("annotations", {}).get(k) for k in ("summary", "description", "runbook"))
            results["alert-e2e"] = (ok, detail + ("" if ok else " — annotations missing"))
        else:
            with Webhook.lock:
                seen = [(p, [x["labels"].get("alertname") for x in pl.get("alerts", [])]) for p, pl in Webhook.received]
            results["alert-e2e"] = (False, f"no SluiceGatewayDown at {want_path} within 30 s; webhook saw {seen}")
        for w in workers:
            w.join(timeout=35)
    except Exception as e:  # a setup failure fails every check
        for n in ("live-panels", "live-recording", "alert-e2e"):
            results.setdefault(n, (False, f"setup: {e}"))
    finally:
        stop_all()
        if hook_srv:
            hook_srv.shutdown()
        if args.keep or not all(ok for ok, _ in results.values()):
            print(f"logs: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    for n in ("live-panels", "live-recording", "alert-e2e"):
        ok, detail = results.get(n, (False, "not run"))
        print(f"{'PASS' if ok else 'FAIL'} {n}: {detail}")
    print(f"live run took {time.time() - t0:.0f}s")
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
