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
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    /// A handle on a server another [`RedisServer`] owns (not killed on
    /// drop).
    pub fn attach(port: u16) -> RedisServer {
        RedisServer { port, child: None }
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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
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
    }
}
