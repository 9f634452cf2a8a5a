"""Processes for the benchmark: the simulated fleet and the proxies.

Every process is started in its own session (process group = its pid) and
registered; `stop_all()` (called from an atexit hook and the signal
handlers in `bench`) kills exactly those groups. Ports are picked free on
loopback at run time. CPU and memory figures come from /proc for every
process in a proxy's group (nginx: master + workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent       # loadtest/
ROOT = HERE.parent
CONF = HERE / "conf"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_started: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    f = open(log, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, **(env or {})})
    f.close()
    _started.append(p)
    return p


def stop(p: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    else:
        # the leader is gone; workers of its group may remain (nginx)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in _started:
        _started.remove(p)


def stop_all() -> None:
    for p in list(_started):
        stop(p)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:      # field 5: pgrp
            pids.append(int(d))
    return pids


def cpu_seconds(pgid: int) -> float:
    """user + system CPU time of every process in the group (all threads)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime
    return total / CLK_TCK


def rss_kib(pgid: int) -> int:
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Sim:
    port: int
    proc: subprocess.Popen
    args: list[str]

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def counters(self) -> dict:
        import json
        st, body = http_get(f"http://127.0.0.1:{self.port}/sim/counters")
        return json.loads(body) if st == 200 else {}


@dataclass
class Fleet:
    sims: list[Sim]
    workdir: Path

    @property
    def addrs(self):
        return [s.addr for s in self.sims]

    def counters(self) -> list[dict]:
        return [s.counters() for s in self.sims]

    def stop(self):
        for s in self.sims:
            stop(s.proc)


def start_fleet(binary: Path, workdir: Path, specs: list[list[str]], env: dict | None = None) -> Fleet:
    """One `sluice sim` per spec (extra CLI flags)."""
    sims = []
    for i, extra in enumerate(specs):
        port = free_port()
        args = [str(binary), "sim", "--listen", f"127.0.0.1:{port}", "--seed", str(i + 1), *extra]
        p = spawn(args, workdir / f"sim{i}.log", env=env)
        sims.append(Sim(port, p, args))
    for s in sims:
        wait_for(lambda: http_get(f"http://127.0.0.1:{s.port}/health")[0] == 200, 10, f"sim on {s.port}")
    return Fleet(sims, workdir)


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen
    workdir: Path
    admin_port: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return rss_kib(self.proc.pid)

    def stop(self):
        stop(self.proc)


def _render(tmpl: str, **kw) -> str:
    return string.Template((CONF / tmpl).read_text()).substitute(**kw)


def start_refuser(workdir: Path) -> tuple[subprocess.Popen, int]:
    """nginx answering every request with an instant 503 (no backend): what
    any refusal costs the measuring client at that moment. Returns the
    process and its port."""
    d = workdir / "refuser"
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "nginx.conf").write_text(_render("nginx-503.conf.tmpl", dir=d, port=port))
    p = spawn(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "nginx-error.log")],
              d / "nginx.out")
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/")[0] == 503 or p.poll() is not None, 10,
             "refuser nginx")
    if p.poll() is not None:
        raise RuntimeError(f"refuser nginx exited: {(d / 'nginx.out').read_text()[-2000:]}")
    return p, port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def admin_metrics(proxy: "Proxy | None") -> str:
    """Sluice's own /metrics now ("" for another proxy, none, or a failed read)."""
    if not (proxy and proxy.admin_port):
        return ""
    st, body = http_get(f"http://127.0.0.1:{proxy.admin_port}/metrics")
    return body.decode() if st == 200 else ""


def floor_binary(binary: Path) -> Path:
    """The minimal pingora proxy built beside a Sluice binary
    (`cargo build [--release] --example min_pingora`): pingora's floor."""
    return binary.parent / "examples" / "min_pingora"


def start_proxy(kind: str, binary: Path, fleet: Fleet, *, threads: int, slots: int,
                queue_timeout: str, base: Path) -> Proxy:
    """kind: sluice | nginx | haproxy | pingora (`floor_binary`: no logic, the
    upstreams in turn). `slots`: per-backend limit given to HAProxy's maxconn
    (Sluice reads it from /props; nginx and pingora have no such limit)."""
    d = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=base))
    os.chmod(d, 0o755)
    port = free_port()
    if kind == "sluice":
        admin = free_port()
        servers = "\n".join(
            f'[[backends]]\nname = "b{i}"\nurl = "http://127.0.0.1:{s.port}"\n'
            for i, s in enumerate(fleet.sims))
        (d / "sluice.toml").write_text(_render("sluice.toml.tmpl", port=port, admin_port=admin,
                                               threads=threads, queue_timeout=queue_timeout,
                                               servers=servers))
        p = spawn([str(binary), "run", "--config", str(d / "sluice.toml"), "--run-dir", str(d)],
                  d / "sluice.log", env={"RUST_LOG": "warn"})
        wait_for(lambda: http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200 or p.poll() is not None,
                 15, "sluice /readyz")
        if p.poll() is not None:
            raise RuntimeError(f"sluice exited: {(d / 'sluice.log').read_text()[-2000:]}")
        return Proxy(kind, port, p, d, admin_port=admin)
    if kind == "nginx":
        servers = "\n".join(f"        server 127.0.0.1:{s.port} max_fails=1 fail_timeout=10s;"
                            for s in fleet.sims)
        (d / "nginx.conf").write_text(_render("nginx.conf.tmpl", workers=threads, dir=d, port=port,
                                              servers=servers))
        p = spawn(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "nginx-error.log")],
                  d / "nginx.out")
    elif kind == "pingora":
        ups = ",".join(f"127.0.0.1:{s.port}" for s in fleet.sims)
        p = spawn([str(floor_binary(binary)), f"127.0.0.1:{port}", ups, str(threads)], d / "pingora.out")
    elif kind == "haproxy":
        servers = "\n".join(f"    server b{i} 127.0.0.1:{s.port}" for i, s in enumerate(fleet.sims))
        (d / "haproxy.cfg").write_text(_render("haproxy.cfg.tmpl", threads=threads, dir=d, port=port,
                                               queue_timeout=queue_timeout, maxconn=slots,
                                               servers=servers))
        p = spawn(["haproxy", "-db", "-f", str(d / "haproxy.cfg")], d / "haproxy.out")
    else:
        raise ValueError(kind)
    wait_for(lambda: _port_open(port) or p.poll() is not None, 10, f"{kind} port")
    if p.poll() is not None:
        out = "".join(f.read_text()[-2000:] for f in d.glob("*.out")) if d.exists() else ""
        raise RuntimeError(f"{kind} exited: {out}")
    if kind == "haproxy":
        time.sleep(1.2)     # first health checks (inter 500ms, rise 2) — servers start as up anyway
    return Proxy(kind, port, p, d)


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
