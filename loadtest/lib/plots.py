"""Plots for `loadtest/bench` (run with loadtest/.venv/bin/python, which has
matplotlib): latency over time and goodput per proxy.

    plots.py results.json OUTDIR
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"direct": "#7f7f7f", "sluice": "#1f77b4", "pingora": "#17becf", "nginx": "#2ca02c", "haproxy": "#d62728"}
OUTCOME = {"ok": ("#1f77b4", "200"), "http_error": ("#ff7f0e", "rejected (non-200)"),
           "timeout": ("#d62728", "client gave up (deadline)"), "conn_error": ("#000000", "connection error"),
           "reset": ("#9467bd", "reset mid-response")}


def scatter_panels(raw, title, path, hline=None, vline=None, ylog=False):
    targets = list(raw)
    n = len(targets)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, t in zip(axes.flat, targets):
        pts = raw[t]
        for oc, (color, label) in OUTCOME.items():
            xs = [p[0] for p in pts if p[2] == oc]
            ys = [p[1] * 1000 for p in pts if p[2] == oc]
            if xs:
                ax.scatter(xs, ys, s=4, c=color, label=f"{label} ({len(xs)})", alpha=0.6, linewidths=0)
        if hline:
            ax.axhline(hline * 1000, color="#444", lw=0.8, ls="--")
        if vline is not None:
            ax.axvline(vline, color="#444", lw=0.8, ls=":")
        ax.set_title(t)
        ax.set_ylabel("latency ms")
        if ylog:
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left", markerscale=3)
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("request start, s")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    data = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    res, meta = data["results"], data["meta"]
    made = []

    if "s1" in res:
        rows = res["s1"]["rows"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
        names = list(rows)
        a1.bar(names, [rows[k]["rps"] or 0 for k in names], color=[COLORS[k] for k in names])
        a1.set_title("requests/s at saturation (n_predict 0)")
        px = [k for k in names if rows[k].get("cpu_us_per_req") is not None]
        a2.bar(px, [rows[k]["cpu_us_per_req"] for k in px], color=[COLORS[k] for k in px])
        a2.set_title("proxy CPU µs per request")
        for a in (a1, a2):
            a.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "overhead.png", dpi=90)
        plt.close(fig)
        made.append("overhead.png")

    if "s3" in res:
        s = res["s3"]
        scatter_panels(s["raw"], f"3x overload: latency over time ({s['rate']} req/s offered, "
                       f"capacity {s['capacity_rps']}/s, deadline {s['deadline_s']} s)",
                       out / "overload-latency.png", hline=s["deadline_s"])
        made.append("overload-latency.png")
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]})
        D = s["deadline_s"]
        for t, pts in s["raw"].items():
            end = max((p[0] for p in pts), default=0)
            bins = [0] * (int(end) + 1)
            for p in pts:
                if p[2] == "ok" and p[1] <= D:
                    bins[int(p[0])] += 1
            a1.plot(range(len(bins)), bins, label=t, color=COLORS[t], lw=1.5)
        a1.axhline(s["capacity_rps"], color="#444", ls="--", lw=0.8, label="fleet capacity")
        a1.set_xlabel("arrival second")
        a1.set_ylabel("200s within deadline / s")
        a1.set_title("goodput over time")
        a1.legend(fontsize=8)
        a1.grid(alpha=0.3)
        names = list(s["rows"])
        a2.bar(names, [s["rows"][k]["goodput_rps"] for k in names], color=[COLORS[k] for k in names])
        a2.axhline(s["capacity_rps"], color="#444", ls="--", lw=0.8)
        a2.set_title("goodput per proxy (req/s)")
        a2.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "overload-goodput.png", dpi=90)
        plt.close(fig)
        made.append("overload-goodput.png")

    if "s4" in res:
        s = res["s4"]
        fig, ax = plt.subplots(figsize=(7, 4))
        for t, pts in s["raw"].items():
            lat = sorted(p[1] * 1000 for p in pts if p[2] == "ok")
            if lat:
                ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=t, color=COLORS[t])
        ax.set_xscale("log")
        ax.set_xlabel("latency ms (log)")
        ax.set_ylabel("share of requests")
        ax.set_title("heterogeneous fleet (one backend 3x slower): latency CDF")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "hetero-latency.png", dpi=90)
        plt.close(fig)
        made.append("hetero-latency.png")

    if "s5" in res:
        s = res["s5"]
        scatter_panels(s["raw"], f"failover: backend b2 killed at t = {s['kill_at']} s (dotted)",
                       out / "failover-latency.png", vline=s["kill_at"])
        made.append("failover-latency.png")

    print(", ".join(str(out / m) for m in made))


if __name__ == "__main__":
    main()
