//! A real `redis-server` (Debian's package) on a free loopback port,
//! started and killed by the test that owns it. Missing, it fails the test
//! with the command that installs it: never a skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice::gateway::free_port;

/// One `redis-server` process, no persistence, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With [`RedisServer::start_persistent`]: its append-only file's folder.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
            dir: None,
        };
        r.restart();
        r
    }

    /// Like [`RedisServer::start`], but every write is in an append-only
    /// file (fsync each) that a restart after [`RedisServer::kill`] reads
    /// back: a Redis that crashes and comes back with its data.
    pub fn start_persistent() -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sluice-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RedisServer {
            port,
            child: None,
            dir: Some(dir),
        };
        r.restart();
        r
    }

    /// A handle on a server another [`RedisServer`] owns (not killed on
    /// drop).
    pub fn attach(port: u16) -> RedisServer {
        RedisServer {
            port,
            child: None,
            dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): what a crash or a fail-over looks like
    /// to the gateways. Its data is gone (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        // Redis 7 refuses DEBUG (used by `stall`) unless enabled; older
        // servers have DEBUG on and do not know the option.
        let debug: &[&str] = if major_version() >= 7 {
            &["--enable-debug-command", "local"]
        } else {
            &[]
        };
        let persist: Vec<String> = match &self.dir {
            Some(d) => ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
                .iter()
                .map(|s| s.to_string())
                .chain([d.display().to_string()])
                .collect(),
            None => vec!["--appendonly".into(), "no".into()],
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .args(&persist)
            .args(debug)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with \
                     `apt-get install -y redis-server` (.ci/cluster.sh does)"
                )
            });
        self.child = Some(child);
        let ok = super::poll(Duration::from_secs(10), || self.pings());
        assert!(ok, "redis-server on port {} did not answer PING", self.port);
    }

    /// Makes it unresponsive for `d` (`DEBUG SLEEP`): a slow Redis, as a
    /// long command or a swapping host makes it. Returns once it answers.
    pub fn stall(&self, d: Duration) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server reachable");
        let cmd = format!("DEBUG SLEEP {:.3}\r\n", d.as_secs_f64());
        s.write_all(cmd.as_bytes()).unwrap();
        let mut buf = [0u8; 16];
        let _ = s.set_read_timeout(Some(d + Duration::from_secs(5)));
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(buf[..n].starts_with(b"+OK"), "DEBUG SLEEP: {:?}", &buf[..n]);
    }

    /// Stops the process (SIGSTOP): connections stay open and commands
    /// wait, unanswered, in its socket buffers; its data is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT): it answers what waited.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("a running redis-server").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Whether it answers PING now.
    pub fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }
}

/// `redis-server --version` → its major version (0 if unknown).
fn major_version() -> u32 {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = text.split("v=").nth(1)?.split('.').next()?.parse().ok()?;
            Some(v)
        })
        .unwrap_or(0)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
