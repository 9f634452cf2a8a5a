//! Process-level operations tests on the real `sluice` binary: simulated
//! backends (`sluice sim`) and the gateway (`sluice run`) as child processes,
//! signals sent with `kill`, all on loopback with ports picked at run time.
//!
//! - graceful upgrade under continuous load: a second `sluice run --upgrade`
//!   takes the listening sockets over when the old process gets SIGQUIT; no
//!   request may fail;
//! - graceful shutdown: on SIGTERM new connections are refused, a stream in
//!   flight completes, and the process exits once the grace period is over;
//! - systemd: `READY=1` on `$NOTIFY_SOCKET` once the listeners accept, then
//!   `WATCHDOG=1` keep-alives at half `$WATCHDOG_USEC`; the default run
//!   directory comes from `$RUNTIME_DIRECTORY` and a loose one is refused.
//!
//! Every child is killed and reaped when its guard drops (also on panic, when
//! the tail of its log is printed).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice::gateway::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A scratch directory under the system temp dir (short paths: the upgrade
/// socket lives in it). Kept, with its path printed, when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("sluice-ops-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process of the `sluice` binary, output in `<dir>/<name>.log`.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, args: &[&str]) -> Proc {
        Proc::spawn_env(name, dir, args, &[])
    }

    fn spawn_env(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`QUIT`, `TERM`) with the `kill` command.
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines for `POST /completion` written by this process.
    fn completions_logged(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("sluice::access") && l.contains("/completion"))
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!(
                "--- {} (pid {}) log tail ---\n{}",
                self.name,
                self.child.id(),
                tail.join("\n")
            );
        }
    }
}

fn wait_listening(addr: SocketAddr, limit: Duration) {
    let end = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < end, "{addr} not listening after {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `sluice sim` on a free port and waits until it listens.
fn start_sim(dir: &Path, name: &str, slots: u32, gen_tps: u32) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = addr.to_string();
    let slots = slots.to_string();
    let gen_tps = gen_tps.to_string();
    let p = Proc::spawn(
        name,
        dir,
        &[
            "sim",
            "--listen",
            &listen,
            "--slots",
            &slots,
            "--gen-tps",
            &gen_tps,
            "--prompt-tps",
            "100000",
        ],
    );
    wait_listening(addr, Duration::from_secs(10));
    (p, addr)
}

struct Gateway {
    proxy: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    run_dir: PathBuf,
}

impl Gateway {
    fn configure(dir: &Path, backends: &[SocketAddr], grace: &str) -> Gateway {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut text = format!(
            "[server]\nlisten = \"{proxy}\"\nthreads = 2\ngrace_period = \"{grace}\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [scrape]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n"
        );
        for (i, b) in backends.iter().enumerate() {
            text += &format!("[[backends]]\nname = \"b{i}\"\nurl = \"http://{b}\"\n");
        }
        let config = dir.join("sluice.toml");
        std::fs::write(&config, text).unwrap();
        Gateway {
            proxy,
            admin,
            config,
            run_dir: dir.join("run"),
        }
    }

    fn start(&self, name: &str, dir: &Path, upgrade: bool) -> Proc {
        let config = self.config.to_str().unwrap();
        let run_dir = self.run_dir.to_str().unwrap();
        let mut args = vec!["run", "--config", config, "--run-dir", run_dir];
        if upgrade {
            args.push("--upgrade");
        }
        Proc::spawn(name, dir, &args)
    }

    /// Waits until `/readyz` answers 200 (some backend can take work).
    fn wait_ready(&self, p: &mut Proc, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            assert!(p.running(), "{} exited during start-up", p.name);
            let ok = get(self.admin, "/readyz").is_ok_and(|r| r.status == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < end, "gateway not ready after {limit:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client over std::net, so that each connection and each
// byte is under the test's control.

struct Response {
    status: u16,
    /// `x-sluice-reason`, on refusals.
    reason: String,
    body: Vec<u8>,
    /// The server allows another request on this connection.
    reusable: bool,
}

struct Conn {
    reader: BufReader<TcpStream>,
    /// Requests already answered on this connection.
    used: u32,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
            used: 0,
        })
    }
}

enum Failure {
    /// Failed before any byte of a response arrived.
    NoResponse(io::Error),
    /// Failed in the middle of a response.
    Broken(io::Error),
}

fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    keep_alive: bool,
) -> Vec<u8> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    reason: String,
}

/// Reads the status line and the headers.
fn read_head(r: &mut BufReader<TcpStream>) -> Result<Head, Failure> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => {
            return Err(Failure::NoResponse(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the status line",
            )))
        }
        Ok(_) => {}
        Err(e) => return Err(Failure::NoResponse(e)),
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Broken(io::Error::other(format!("bad status line {line:?}"))))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: false,
        reason: String::new(),
    };
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(Failure::Broken)? == 0 {
            return Err(Failure::Broken(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in headers",
            )));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => head.content_length = v.parse().ok(),
            "transfer-encoding" => head.chunked = v.contains("chunked"),
            "connection" => head.close = v.contains("close"),
            "x-sluice-reason" => head.reason = v,
            _ => {}
        }
    }
    Ok(head)
}

/// Decodes a chunked body, calling `on_chunk` for each chunk as it arrives.
/// Returns the body; an error if the terminating zero-size chunk never came.
fn read_chunked(
    r: &mut BufReader<TcpStream>,
    mut on_chunk: impl FnMut(&[u8]),
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended without its final chunk",
            ));
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // trailers, then the empty line
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk)?;
        chunk.truncate(size);
        on_chunk(&chunk);
        body.extend_from_slice(&chunk);
    }
}

/// Sends one request on `conn` and reads the whole response.
fn exchange(conn: &mut Conn, req: &[u8]) -> Result<Response, Failure> {
    conn.reader
        .get_mut()
        .write_all(req)
        .map_err(Failure::NoResponse)?;
    let head = read_head(&mut conn.reader)?;
    let r = &mut conn.reader;
    let (body, reusable) = if head.chunked {
        (
            read_chunked(r, |_| {}).map_err(Failure::Broken)?,
            !head.close,
        )
    } else if let Some(n) = head.content_length {
        let mut b = vec![0; n];
        r.read_exact(&mut b).map_err(Failure::Broken)?;
        (b, !head.close)
    } else {
        let mut b = Vec::new();
        r.read_to_end(&mut b).map_err(Failure::Broken)?;
        (b, false)
    };
    conn.used += 1;
    Ok(Response {
        status: head.status,
        reason: head.reason,
        body,
        reusable,
    })
}

fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut c = Conn::open(addr).map_err(|e| e.to_string())?;
    exchange(&mut c, &request_bytes(addr, "GET", path, "", false)).map_err(|f| match f {
        Failure::NoResponse(e) | Failure::Broken(e) => e.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Continuous load.

#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    /// Reused keep-alive connections the server had closed before any byte of
    /// the response (the request is re-sent on a fresh connection, as HTTP
    /// clients do; a failure of the re-send is a failure).
    stale_retries: AtomicU64,
    failures: Mutex<Vec<Failed>>,
}

/// A failed request: when (seconds since the load started), what kind
/// (status and `x-sluice-reason`, or the I/O error), and details.
#[derive(Clone)]
struct Failed {
    at: f64,
    kind: String,
    detail: String,
}

/// One line per kind of failure: count, first and last time.
fn summarize(failures: &[Failed]) -> String {
    let mut kinds: Vec<(String, usize, f64, f64)> = Vec::new();
    for f in failures {
        match kinds.iter_mut().find(|k| k.0 == f.kind) {
            Some(k) => {
                k.1 += 1;
                k.2 = k.2.min(f.at);
                k.3 = k.3.max(f.at);
            }
            None => kinds.push((f.kind.clone(), 1, f.at, f.at)),
        }
    }
    kinds
        .iter()
        .map(|(kind, n, first, last)| format!("  {n} x {kind}, from {first:.3} s to {last:.3} s"))
        .collect::<Vec<_>>()
        .join("\n")
}

const COMPLETION: &str = r#"{"prompt":"upgrade","n_predict":4}"#;

/// One client: small completions back to back until `stop`, on a fresh
/// connection per request or on a keep-alive connection.
fn client(
    addr: SocketAddr,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    t0: Instant,
) {
    let req = request_bytes(addr, "POST", "/completion", COMPLETION, keep_alive);
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let c = match conn.take() {
                Some(c) => c,
                None => match Conn::open(addr) {
                    Ok(c) => c,
                    Err(e) => break Err(format!("connect: {e}")),
                },
            };
            let mut c = c;
            match exchange(&mut c, &req) {
                Ok(r) => {
                    if keep_alive && r.reusable {
                        conn = Some(c);
                    }
                    break Ok(r);
                }
                Err(Failure::NoResponse(_)) if c.used > 0 && attempt == 1 => {
                    stats.stale_retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(Failure::NoResponse(e)) => break Err(format!("no response: {e}")),
                Err(Failure::Broken(e)) => break Err(format!("broken response: {e}")),
            }
        };
        match result {
            Ok(r) if r.status == 200 && contains(&r.body, br#""stop":true"#) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                let f = Failed {
                    at: t0.elapsed().as_secs_f64(),
                    kind: format!("status {} reason {:?}", r.status, r.reason),
                    detail: String::from_utf8_lossy(&r.body[..r.body.len().min(160)]).into(),
                };
                stats.failures.lock().unwrap().push(f);
            }
            Err(e) => {
                let f = Failed {
                    at: t0.elapsed().as_secs_f64(),
                    kind: e.split(':').next().unwrap_or("").to_string(),
                    detail: e,
                };
                stats.failures.lock().unwrap().push(f);
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------

/// Graceful upgrade under continuous load: 8 clients (4 with a fresh
/// connection per request, 4 on keep-alive connections) run for the whole
/// test; a second `sluice run --upgrade` is started, the old process gets
/// SIGQUIT, hands its sockets over and exits; the load goes on 2 s more.
/// No request may fail.
///
/// The new process scrapes the fleet once before it opens its listeners and
/// serves by those figures until its scrape loop renews them. Under CPU load
/// the loop's first round came later than three scrape intervals, the
/// figures read as stale, every backend as busy, and the first requests got
/// `503 deadline_unmeetable` (3 of 4 runs with two CPU hogs beside the
/// test, before `eligibility::stale`): the failure summary shows such a run.
#[test]
fn graceful_upgrade_under_load_loses_no_request() {
    let dir = TempDir::new("upgrade");
    let (_s0, a0) = start_sim(&dir.0, "sim0", 8, 2000);
    let (_s1, a1) = start_sim(&dir.0, "sim1", 8, 2000);
    // A short grace period keeps the test short: the old process lives
    // 5 s (pingora's fixed close timeout) + grace after SIGQUIT.
    let gw = Gateway::configure(&dir.0, &[a0, a1], "3s");
    let mut old = gw.start("old", &dir.0, false);
    gw.wait_ready(&mut old, Duration::from_secs(15));

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, stats) = (stop.clone(), stats.clone());
            let addr = gw.proxy;
            thread::spawn(move || client(addr, i % 2 == 1, stop, stats, t0))
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));

    // The new process first, waiting on the upgrade socket; then SIGQUIT.
    let mut new = gw.start("new", &dir.0, true);
    let sock = gw.run_dir.join("upgrade.sock");
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(new.running(), "new process exited before the hand-over");
        assert!(Instant::now() < end, "{} never appeared", sock.display());
        thread::sleep(Duration::from_millis(10));
    }
    let before_quit = stats.ok.load(Ordering::Relaxed);
    let t_quit = Instant::now();
    old.signal("QUIT");
    let status = old
        .wait_exit(Duration::from_secs(25))
        .expect("old process still running 25 s after SIGQUIT");
    let old_exit = t_quit.elapsed();
    let at_old_exit = stats.ok.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let total = stats.ok.load(Ordering::Relaxed);
    let failures = stats.failures.lock().unwrap().clone();
    let stale = stats.stale_retries.load(Ordering::Relaxed);
    let (by_old, by_new) = (old.completions_logged(), new.completions_logged());
    println!(
        "upgrade under load: {} requests over {:.1} s, {} failed ({before_quit} ok before \
         SIGQUIT at {:.2} s, {} between SIGQUIT and old exit, {} after); {stale} stale \
         keep-alive re-sends; old process exited {:.2} s after SIGQUIT ({status}); access \
         log lines: old {by_old}, new {by_new}",
        total + failures.len() as u64,
        t0.elapsed().as_secs_f64(),
        failures.len(),
        t_quit.duration_since(t0).as_secs_f64(),
        at_old_exit - before_quit,
        total - at_old_exit,
        old_exit.as_secs_f64(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the upgrade (SIGQUIT at {:.3} s, old process \
         exited at {:.3} s):\n{}\nfirst: {}",
        failures.len(),
        total + failures.len() as u64,
        t_quit.duration_since(t0).as_secs_f64(),
        (t_quit + old_exit).duration_since(t0).as_secs_f64(),
        summarize(&failures),
        failures.first().map_or("", |f| &f.detail),
    );
    assert!(new.running(), "the new process is gone");
    assert!(
        total - at_old_exit > 0,
        "nothing served after the old process exited"
    );
    assert!(by_new > 0, "the new process served nothing");
    assert!(before_quit > 0, "nothing served before the upgrade");
    assert!(status.success(), "old process exit status {status}");
}

/// Graceful shutdown: a ~2 s stream is in flight when SIGTERM arrives; new
/// connections are refused soon after, the stream completes with its final
/// chunk, and the process exits when the grace period (10 s) is over.
#[test]
fn sigterm_refuses_new_connections_and_finishes_the_stream() {
    let dir = TempDir::new("shutdown");
    let (_sim, addr) = start_sim(&dir.0, "sim", 4, 50);
    let grace = Duration::from_secs(10);
    let gw = Gateway::configure(&dir.0, &[addr], "10s");
    let mut p = gw.start("gateway", &dir.0, false);
    gw.wait_ready(&mut p, Duration::from_secs(15));

    // n_predict 100 at 50 tokens/s: about 2 s of streaming.
    let proxy = gw.proxy;
    let (first_tx, first_rx) = mpsc::channel::<()>();
    let stream = thread::spawn(move || -> Result<(u16, Vec<u8>, Instant), String> {
        let body = r#"{"prompt":"shutdown","n_predict":100,"stream":true}"#;
        let mut c = Conn::open(proxy).map_err(|e| e.to_string())?;
        c.reader
            .get_mut()
            .write_all(&request_bytes(proxy, "POST", "/completion", body, false))
            .map_err(|e| e.to_string())?;
        let head = read_head(&mut c.reader).map_err(|f| match f {
            Failure::NoResponse(e) | Failure::Broken(e) => e.to_string(),
        })?;
        let status = head.status;
        if !head.chunked {
            return Err(format!("status {status}, not a chunked stream"));
        }
        let mut first = Some(first_tx);
        let body = read_chunked(&mut c.reader, |_| {
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        })
        .map_err(|e| e.to_string())?;
        Ok((status, body, Instant::now()))
    });
    first_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream never started");
    thread::sleep(Duration::from_millis(200));

    let t_term = Instant::now();
    p.signal("TERM");

    // New connections are refused soon after.
    let refused_after = loop {
        match TcpStream::connect_timeout(&gw.proxy, Duration::from_millis(200)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break t_term.elapsed(),
            _ => {}
        }
        assert!(
            t_term.elapsed() < Duration::from_secs(3),
            "still accepting connections 3 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    };

    let (status, body, done) = stream.join().unwrap().expect("the stream in flight failed");
    let stream_done = done.duration_since(t_term);
    let text = String::from_utf8_lossy(&body);
    let events: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|e| e.starts_with("data:"))
        .collect();
    let last = events.last().copied().unwrap_or("");

    let exit = p
        .wait_exit(grace + Duration::from_secs(15))
        .expect("gateway still running 25 s after SIGTERM");
    let exited_after = t_term.elapsed();
    println!(
        "graceful shutdown: connections refused {:.2} s after SIGTERM; stream finished \
         {:.2} s after SIGTERM with {} events; process exited {:.2} s after SIGTERM ({exit}), \
         grace period {} s",
        refused_after.as_secs_f64(),
        stream_done.as_secs_f64(),
        events.len(),
        exited_after.as_secs_f64(),
        grace.as_secs()
    );
    assert_eq!(status, 200);
    assert!(
        refused_after < Duration::from_secs(2),
        "new connections accepted for {refused_after:?} after SIGTERM"
    );
    assert_eq!(events.len(), 101, "100 token events and the final one");
    assert!(
        last.contains(r#""stop":true"#),
        "the stream did not end with its final event: {last}"
    );
    assert!(
        stream_done > Duration::from_millis(500),
        "the stream ended too early"
    );
    assert!(exit.success(), "exit status {exit}");
    // pingora waits out the whole grace period, then stops its runtimes.
    assert!(
        exited_after < grace + Duration::from_secs(3),
        "exited {exited_after:?} after SIGTERM, grace period {grace:?}"
    );
}

#[test]
fn sd_notify_ready_after_listening_then_watchdog_keepalives() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("notify");
    let (_sim, addr) = start_sim(&dir.0, "sim", 4, 50);
    let gw = Gateway::configure(&dir.0, &[addr], "1s");
    let sock_path = dir.0.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let config = gw.config.to_str().unwrap();
    let run_dir = gw.run_dir.to_str().unwrap();
    let t0 = Instant::now();
    let mut p = Proc::spawn_env(
        "gateway",
        &dir.0,
        &["run", "--config", config, "--run-dir", run_dir],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            // 400 ms: a keep-alive every 200 ms.
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 within 15 s");
    let ready_after = t0.elapsed();
    assert_eq!(&buf[..n], b"READY=1");
    // READY=1 only once both listeners accept.
    for a in [gw.proxy, gw.admin] {
        TcpStream::connect_timeout(&a, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("READY=1 sent but {a} does not accept: {e}"));
    }
    let mut at = Vec::new();
    while at.len() < 4 {
        let n = sock.recv(&mut buf).expect("no WATCHDOG=1 keep-alive");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        at.push(Instant::now());
    }
    let per_ping = (at[3] - at[0]) / 3;
    println!(
        "sd_notify: READY=1 {:.2} s after start, then WATCHDOG=1 every {:.0} ms \
         (WATCHDOG_USEC 400 ms)",
        ready_after.as_secs_f64(),
        per_ping.as_secs_f64() * 1000.0
    );
    assert!(
        per_ping >= Duration::from_millis(100) && per_ping <= Duration::from_millis(400),
        "keep-alive every {per_ping:?}, expected about 200 ms"
    );
    assert!(p.running());
}

#[test]
fn default_run_dir_comes_from_runtime_directory_and_a_loose_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rundir");
    let gw = Gateway::configure(&dir.0, &["127.0.0.1:1".parse().unwrap()], "1s");
    let loose = dir.0.join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = gw.config.to_str().unwrap();
    let mut p = Proc::spawn_env(
        "gateway",
        &dir.0,
        &["run", "--config", config],
        &[("RUNTIME_DIRECTORY", loose.to_str().unwrap())],
    );
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("gateway kept running with a world-writable run directory");
    assert!(!status.success());
    let log = p.log_text();
    assert!(
        log.contains(&format!("run directory {} has mode 0777", loose.display())),
        "{log}"
    );

    // A fresh $RUNTIME_DIRECTORY is created, private, and the gateway runs.
    let fresh = dir.0.join("fresh");
    let mut p = Proc::spawn_env(
        "gateway2",
        &dir.0,
        &["run", "--config", config],
        &[("RUNTIME_DIRECTORY", fresh.to_str().unwrap())],
    );
    wait_listening(gw.admin, Duration::from_secs(15));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(p.running());
}
