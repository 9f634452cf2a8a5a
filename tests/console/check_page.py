#!/usr/bin/env python3
"""The operator console, tested as a person would use it.

Starts three `sluice sim` backends (12 slots in all) and `sluice run` in
front of them with an admin token and three API keys, drives 36 closed-loop
clients at the gateway (3x the fleet's slots: an overload), and opens
`/ui` in Debian's chromium (headless) through selenium and chromedriver.

Checks, each printed as `ok NAME` or `FAIL NAME: why`:
  - the page loads and goes live; one card per backend;
  - the cards show what /status shows (DOM read, /status fetched, DOM read
    again: each live figure of /status lies within the two DOM readings,
    give or take a tolerance for requests that start or end in between;
    fixed figures equal);
  - under the overload the page shows refusals, their reasons, the queue
    and the top API keys;
  - without the token the page is read-only (buttons off, no action), and
    the admin listener refuses a drain without the token;
  - a drain from the page with the token typed in takes effect in /status
    (draining, not eligible, in flight falls to 0), and undrain undoes it;
  - a wrong token is refused and the page says so;
  - readable on a phone (no sideways scrolling at 390 px) and in dark mode;
  - no console errors in chromium's browser log (the one deliberate 401 of
    the wrong-token step excepted, matched exactly);
  - the page's own cost: gateway CPU over equal windows under the same
    overload, the page closed and open, alternating (reported, written to
    target/console/cost.json; not a pass/fail bound).

Saves a screenshot of the fleet under overload (--screenshot). Loopback
only, free ports, bounded (about two minutes), kills what it starts.
Prints `console: N passed, M failed`; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "loadtest" / "lib"))
import loadgen  # noqa: E402
import procs  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TOKEN = "console-admin-token-0123456789"
KEYS = {"team-a": "sk-team-a-0123456789", "team-b": "sk-team-b-0123456789",
        "batch": "sk-batch-0123456789ab"}
# Three backends of different speeds, 4 slots each (as in `sluice demo`).
SIMS = [["--slots", "4", "--gen-tps", tps, "--gen-len", "24..64"] for tps in ("600", "400", "200")]
SLOTS = 12
CLIENTS = 3 * SLOTS
# Live figures may move by this much between a DOM reading and /status.
TOLERANCE = 2

results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, why: str = "") -> bool:
    results.append((name, ok, why))
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {why}"), flush=True)
    return ok


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def post(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, method="POST", data=b"")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_until(pred, timeout: float, every: float = 0.2):
    """Polls `pred` until it returns something truthy or time is up."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(every)


# --- load --------------------------------------------------------------------

class Load:
    """CLIENTS closed-loop clients on a thread of their own; a refused client
    waits 0.2 s before its next request (as a client honouring a short
    Retry-After would), so the offered load stays 3x without a spin."""

    def __init__(self, port: int):
        self.target = loadgen.Target("sluice", [("127.0.0.1", port)])
        self.stop = threading.Event()
        self.counts: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.run(self._main())

    async def _main(self):
        names = list(KEYS)
        await asyncio.gather(*(self._worker(KEYS[names[i % len(names)]]) for i in range(CLIENTS)))

    async def _worker(self, key: str):
        body = loadgen.completion_body(48)
        t0 = time.monotonic()
        while not self.stop.is_set():
            r = await loadgen.request(self.target, "/completion", body, t0=t0, timeout=30,
                                      headers={"Authorization": f"Bearer {key}"})
            self.counts[r.status] = self.counts.get(r.status, 0) + 1
            if r.status != 200:
                await asyncio.sleep(0.2)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=40)


# --- processes ---------------------------------------------------------------

def start_gateway(binary: Path, fleet: procs.Fleet, work: Path) -> tuple[int, int, "procs.subprocess.Popen"]:
    port, admin = procs.free_port(), procs.free_port()
    token_file = work / "admin.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    backends = "".join(f'[[backends]]\nname = "b{i}"\nurl = "http://127.0.0.1:{s.port}"\n'
                       for i, s in enumerate(fleet.sims))
    keys = "".join(f'[[api_keys]]\nname = "{n}"\nkey = "{k}"\n' for n, k in KEYS.items())
    conf = work / "sluice.toml"
    conf.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nthreads = 2\ngrace_period = "1s"\n'
        f'[admin]\nlisten = "127.0.0.1:{admin}"\ntoken_file = "{token_file}"\n'
        f'[scrape]\ninterval = "250ms"\n{backends}{keys}')
    os.chmod(conf, 0o600)
    p = procs.spawn([str(binary), "run", "--config", str(conf), "--run-dir", str(work)],
                    work / "sluice.log", env={"RUST_LOG": "warn"})
    procs.wait_for(lambda: procs.http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200
                   or p.poll() is not None, 20, "sluice /readyz")
    if p.poll() is not None:
        raise RuntimeError(f"sluice exited: {(work / 'sluice.log').read_text()[-2000:]}")
    return port, admin, p


def browser(width: int, height: int) -> webdriver.Chrome:
    o = webdriver.ChromeOptions()
    o.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              f"--window-size={width},{height}"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    svc = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=o, service=svc)


# --- reading the page --------------------------------------------------------

READ_CARDS = """
const out = {};
for (const c of document.querySelectorAll('#backends [data-backend]')) {
  const f = {};
  for (const e of c.querySelectorAll('[data-field]')) f[e.dataset.field] = e.textContent.trim();
  f.draining = c.dataset.draining;
  out[c.dataset.backend] = f;
}
return {cards: out, queue: document.querySelector('[data-g="queue_depth"]').textContent.trim(),
        seq: document.getElementById('updated').dataset.seq || '0'};
"""


def as_num(text: str):
    return None if text in ("", "–") else float(text)


LIVE = ["in_flight", "requests_processing", "requests_deferred"]
SLOW = ["limit", "adaptive_limit"]    # the limiter moves at most once a second
FIXED = ["slots", "health"]


def compare(before: dict, status: dict, after: dict) -> list[str]:
    """Where /status (fetched between two DOM readings) disagrees with the page."""
    bad = []
    for b in status["backends"]:
        n = b["name"]
        c1, c2 = before["cards"].get(n), after["cards"].get(n)
        if c1 is None or c2 is None:
            bad.append(f"{n}: no card")
            continue
        for f in LIVE + SLOW:
            want = b[f]
            got = [as_num(c1[f]), as_num(c2[f])]
            if want is None:
                if got != [None, None]:
                    bad.append(f"{n}.{f}: page {got}, /status null")
                continue
            if None in got:
                bad.append(f"{n}.{f}: page {got}, /status {want}")
                continue
            lo, hi = min(got) - TOLERANCE, max(got) + TOLERANCE
            if not lo <= want <= hi:
                bad.append(f"{n}.{f}: page {got}, /status {want}")
        if as_num(c2["slots"]) != b["slots"]:
            bad.append(f"{n}.slots: page {c2['slots']}, /status {b['slots']}")
        if c2["health"] != b["health"]:
            bad.append(f"{n}.health: page {c2['health']}, /status {b['health']}")
        if c2["breaker"] != "breaker " + b["breaker"].replace("_", "-"):
            bad.append(f"{n}.breaker: page {c2['breaker']}, /status {b['breaker']}")
        if c2["models"] != (", ".join(b["models"]) or "–"):
            bad.append(f"{n}.models: page {c2['models']}, /status {b['models']}")
    q = [as_num(before["queue"]), as_num(after["queue"])]
    tol = max(3, 0.25 * max(q))
    if not min(q) - tol <= status["queue_depth"] <= max(q) + tol:
        bad.append(f"queue_depth: page {q}, /status {status['queue_depth']}")
    return bad


def severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# --- the run -----------------------------------------------------------------

def run(args) -> None:
    binary = Path(args.binary).resolve()
    work = Path(tempfile.mkdtemp(prefix="sluice-console-"))
    fleet = procs.start_fleet(binary, work, SIMS)
    port, admin, gw = start_gateway(binary, fleet, work)
    base = f"http://127.0.0.1:{admin}"
    load = Load(port)
    load.start()
    driver = None
    try:
        # Warm up into the overload.
        wait_until(lambda: get_json(f"{base}/status")["queue_depth"] > 0, 15)
        driver = browser(1400, 1150)
        ui = f"{base}/ui"

        def go_live():
            driver.get(ui)
            return wait_until(lambda: driver.execute_script(
                "return document.body.dataset.live === 'true' && "
                "document.querySelectorAll('#backends [data-backend]').length"), 15)

        # The page's own cost: the gateway's CPU over equal windows under the
        # same overload, the page closed (about:blank) and open, alternating.
        without, with_page, polled = [], [], []
        for i in range(args.rounds):
            driver.get("about:blank")
            c0 = procs.cpu_seconds(gw.pid)
            time.sleep(args.measure)  # a measurement window, not a wait for anything
            without.append(procs.cpu_seconds(gw.pid) - c0)
            live = go_live()
            if i == 0:
                check("the page loads and goes live with one card per backend", live == len(SIMS),
                      f"cards: {live}")
            c0 = procs.cpu_seconds(gw.pid)
            s0 = int(driver.execute_script(READ_CARDS)["seq"])
            time.sleep(args.measure)
            with_page.append(procs.cpu_seconds(gw.pid) - c0)
            polled.append(int(driver.execute_script(READ_CARDS)["seq"]) - s0)
        check("the page keeps updating (about one point a second)",
              min(polled) >= args.measure * 0.5, f"{polled} points in {args.measure} s windows")
        state = get_json(f"{base}/ui/state.json?since=0")
        delta = get_json(f"{base}/ui/state.json?since={state['seq']}")
        share = lambda xs: [round(x / args.measure, 4) for x in xs]  # noqa: E731
        cost = {"measure_seconds": args.measure, "rounds": args.rounds, "clients": CLIENTS,
                "slots": SLOTS,
                "gateway_cpu_share_without_page": share(without),
                "gateway_cpu_share_with_page": share(with_page),
                "mean_difference_cpu_share": round(
                    (sum(with_page) - sum(without)) / (args.rounds * args.measure), 4),
                "sampler_tick_seconds": state["sampler_tick_seconds"],
                "state_json_bytes_full": len(json.dumps(state)),
                "state_json_bytes_per_poll": len(json.dumps(delta)),
                "status_codes": dict(sorted(load.counts.items()))}
        print("cost:", json.dumps(cost), flush=True)
        out = ROOT / "target" / "console"
        out.mkdir(parents=True, exist_ok=True)
        (out / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")

        # The cards against /status, a few rounds.
        # The page polls once a second, so a figure that moves fast under
        # load (busy slots, queue depth) can differ from a /status read a
        # moment later; a round that disagrees is read again (up to 8
        # times, 0.4 s apart) and counts as failed only if it still does: a
        # card that shows the wrong figure disagrees every time. (Three
        # reads were once not enough: a sim's busy slots read 1 on /status
        # and 4 on the page three times running, at 3x overload.)
        rounds = []
        for _ in range(5):
            for _attempt in range(8):
                before = driver.execute_script(READ_CARDS)
                status = get_json(f"{base}/status")
                after = driver.execute_script(READ_CARDS)
                bad = compare(before, status, after)
                if not bad:
                    break
                time.sleep(0.4)
            rounds.append(bad)
            time.sleep(0.7)
        check("the cards show the figures /status shows (5 rounds)", all(not r for r in rounds),
              "; ".join(x for r in rounds for x in r))

        now = get_json(f"{base}/ui/state.json?since=999999999")["now"]
        shown = driver.execute_script(
            "return {shed: document.querySelector('[data-g=\"shed_per_s\"]').textContent,"
            " reasons: [...document.querySelectorAll('#reasons tbody td:first-child')].map(e => e.textContent),"
            " keys: [...document.querySelectorAll('#keys tbody td:first-child')].map(e => e.textContent),"
            " latency: document.querySelector('[data-g=\"latency\"]').textContent}")
        check("under 3x overload the page shows refusals with their reasons",
              now["shed_per_s"] > 0 and as_num(shown["shed"]) and shown["reasons"]
              and shown["reasons"][0] != "none", f"now {now['shed_per_s']}, page {shown}")
        check("the top API keys table lists the keys sending load",
              set(KEYS) <= set(shown["keys"]), f"page {shown['keys']}")
        check("latency percentiles are shown", "–" not in shown["latency"].split(" · ")[1],
              f"page {shown['latency']}")

        shot = Path(args.screenshot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        check("a screenshot of the fleet under overload is saved",
              driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000, str(shot))

        errors = severe(driver)
        check("no console errors while live under overload", not errors, "; ".join(errors))

        # Read-only without the token.
        disabled = driver.execute_script(
            "return [...document.querySelectorAll('button[data-act]')].every(b => b.disabled)")
        card = driver.find_element(By.CSS_SELECTOR, '[data-backend="b1"]')
        card.find_element(By.CSS_SELECTOR, 'button[data-act="drain"]').click()
        time.sleep(1.0)  # give a (wrong) action time to land before asserting it did not
        st = {b["name"]: b for b in get_json(f"{base}/status")["backends"]}
        check("without the token the page is read-only (buttons off, nothing drained)",
              disabled and driver.execute_script("return document.body.dataset.readonly") == "true"
              and not st["b1"]["draining"], f"disabled {disabled}, b1 draining {st['b1']['draining']}")
        check("the admin listener refuses a drain without the token",
              post(f"{base}/backends/b1/drain", None) == 401
              and not get_json(f"{base}/status")["backends"][1]["draining"])

        # Drain from the page, token typed in.
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "token-use").click()
        page_src = driver.page_source
        check("the typed token is not written into the page", TOKEN not in page_src)
        card.find_element(By.CSS_SELECTOR, 'button[data-act="drain"]').click()
        drained = wait_until(lambda: (lambda b: b["draining"] and not b["eligible"])(
            get_json(f"{base}/status")["backends"][1]), 5)
        check("a drain from the page takes effect in /status", bool(drained))
        emptied = wait_until(lambda: get_json(f"{base}/status")["backends"][1]["in_flight"] == 0, 30)
        check("the drained backend's in-flight requests finish and no new ones start", bool(emptied))
        shown = wait_until(lambda: card.get_attribute("data-draining") == "true"
                           and "draining" in card.find_element(By.CSS_SELECTOR, '[data-field="verdict"]').text, 5)
        check("the card shows the backend draining", bool(shown))
        card.find_element(By.CSS_SELECTOR, 'button[data-act="undrain"]').click()
        undrained = wait_until(lambda: not get_json(f"{base}/status")["backends"][1]["draining"], 5)
        check("undrain from the page takes effect in /status", bool(undrained))

        errors = severe(driver)
        check("no console errors after drain and undrain", not errors, "; ".join(errors))

        # A wrong token is refused; the page says so.
        driver.find_element(By.ID, "token-forget").click()
        driver.find_element(By.ID, "token").send_keys("not-the-admin-token-000")
        driver.find_element(By.ID, "token-use").click()
        driver.find_element(By.CSS_SELECTOR, '[data-backend="b0"] button[data-act="drain"]').click()
        said = wait_until(lambda: "refused (401)" in driver.find_element(By.ID, "action").text, 5)
        check("a wrong token is refused and the page says so",
              bool(said) and not get_json(f"{base}/status")["backends"][0]["draining"],
              driver.find_element(By.ID, "action").text)
        errors = [e for e in severe(driver)
                  if not ("/backends/b0/drain" in e and "401" in e)]
        check("no console errors but the deliberate 401", not errors, "; ".join(errors))

        # Phone width and dark mode.
        driver.set_window_size(390, 844)
        time.sleep(0.5)  # layout after resize
        over = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        check("readable on a phone: no sideways scrolling at 390 px", over <= 1, f"{over} px too wide")
        light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        check("dark and light schemes differ", light != dark, f"{light} / {dark}")
        if args.phone_screenshot:
            driver.save_screenshot(args.phone_screenshot)
        errors = [e for e in severe(driver) if not ("/backends/b0/drain" in e and "401" in e)]
        check("no console errors at the end", not errors, "; ".join(errors))
    finally:
        if driver is not None:
            driver.quit()
        load.finish()
        procs.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "debug" / "sluice"))
    ap.add_argument("--screenshot", default=str(ROOT / "target" / "console" / "console-overload.png"))
    ap.add_argument("--phone-screenshot", default="")
    ap.add_argument("--measure", type=float, default=10.0,
                    help="seconds of each window of gateway CPU measured without and with the page")
    ap.add_argument("--rounds", type=int, default=2,
                    help="pairs of windows (page closed, page open), alternating")
    args = ap.parse_args()
    try:
        run(args)
    except Exception as e:  # a crash is a failed check, never a silent pass
        check("the run completes", False, f"{type(e).__name__}: {e}")
    finally:
        procs.stop_all()
    passed = sum(ok for _, ok, _ in results)
    failed = len(results) - passed
    print(f"console: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
