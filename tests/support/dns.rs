//! A real `dnsmasq` (Debian's `dnsmasq-base`) answering one domain from a
//! hosts directory the test rewrites, on a free loopback UDP/TCP port,
//! started and killed by the test that owns it. Missing, it fails the test
//! with the command that installs it: never a skip.
//!
//! dnsmasq watches the directory (inotify) and reloads a file when it
//! changes; names of the domain it does not list get NXDOMAIN
//! (`--local`), and every answer carries a 1 s TTL (`--local-ttl`).

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `dnsmasq` process, killed on drop.
pub struct Dnsmasq {
    pub port: u16,
    /// The domain it answers for (`fleet.test`).
    pub domain: String,
    /// The directory of hosts files it watches.
    dir: PathBuf,
    /// Where a hosts file is written before it is renamed into `dir`.
    staging: PathBuf,
    child: Option<Child>,
}

/// A loopback port free for both UDP and TCP a moment ago.
fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

impl Dnsmasq {
    /// Starts one answering for `domain` with an empty hosts directory and
    /// waits until it answers.
    pub fn start(domain: &str) -> Dnsmasq {
        let root = std::env::temp_dir().join(format!("sluice-dns-{:x}", rand::random::<u64>()));
        let (dir, staging) = (root.join("hosts"), root.join("staging"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&staging).unwrap();
        let mut d = Dnsmasq {
            port: free_dns_port(),
            domain: domain.to_string(),
            dir,
            staging,
            child: None,
        };
        d.restart();
        d
    }

    /// `127.0.0.1:port`, for `[discovery] nameservers`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Makes `name` answer `ips` (none: NXDOMAIN), replacing the file
    /// whole (a rename, so dnsmasq never reads half of it).
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        let text: String = ips.iter().map(|ip| format!("{ip} {name}\n")).collect();
        let tmp = self.staging.join("fleet");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("fleet")).unwrap();
    }

    /// Kills it at once (SIGKILL): a DNS outage, as the gateway sees it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, reading the hosts directory.
    pub fn restart(&mut self) {
        self.kill();
        // Debian puts it in /usr/sbin, often not on a user's PATH.
        let bin = ["/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let child = Command::new(bin)
            .args(["--keep-in-foreground", "--no-resolv", "--no-hosts"])
            .args(["--conf-file=/dev/null", "--pid-file=", "--bind-interfaces"])
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--hostsdir={}", self.dir.display()))
            .arg(format!("--local=/{}/", self.domain))
            .arg("--local-ttl=1")
            // As root it would switch to `nobody`, who cannot read the
            // test's private directory; as anyone else this is ignored.
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start dnsmasq ({e}): install it with \
                     `apt-get install -y dnsmasq-base` (tests/prereqs.sh does)"
                )
            });
        self.child = Some(child);
        let probe = format!("probe.{}", self.domain);
        let up = super::poll(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("dnsmasq exited at start ({status}); run it by hand to see why");
            }
            self.rcode(&probe).is_some()
        });
        assert!(up, "dnsmasq on port {} did not answer", self.port);
    }

    /// The response code of an A query for `name` (0 NOERROR, 3 NXDOMAIN),
    /// or `None` without an answer within 200 ms.
    pub fn rcode(&self, name: &str) -> Option<u8> {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        s.send_to(&q, self.addr()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        (n >= 4).then_some(buf[3] & 0x0f)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}
