//! The process's place under a service manager: the run directory (pid
//! file, upgrade socket), `sd_notify` readiness, and the watchdog.
//!
//! - [`run_dir`] picks and checks the run directory: `--run-dir`, else
//!   `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`), else
//!   `/run/sluice`. It is created mode 0700; an existing one that is not a
//!   directory, is owned by another user, or is writable by group or others
//!   is refused (someone else could replace the upgrade socket or pid file).
//! - [`Notifier`] sends datagrams to `$NOTIFY_SOCKET` (a path, or an
//!   abstract socket written `@name`), the `sd_notify(3)` protocol.
//! - [`Watchdog`] is a background service: `READY=1` once both listeners
//!   accept connections, then `WATCHDOG=1` every half `WATCHDOG_USEC`,
//!   only while the scrape loop's [`Heartbeat`] is fresh. A stalled scrape
//!   runtime stops the pings and systemd restarts the service.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::backend::scrape::Heartbeat;

/// Where the run directory is when `--run-dir` is not given.
pub const DEFAULT_RUN_DIR: &str = "/run/sluice";

/// The run directory: `flag` (from `--run-dir`), else `$RUNTIME_DIRECTORY`
/// (the first, if systemd lists several), else [`DEFAULT_RUN_DIR`].
pub fn run_dir_path(flag: Option<PathBuf>, runtime_directory: Option<&str>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    match runtime_directory
        .and_then(|v| v.split(':').next())
        .filter(|s| !s.is_empty())
    {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(DEFAULT_RUN_DIR),
    }
}

/// Creates `dir` (mode 0700) or checks the one that is there. `Err` says
/// what is wrong and what to do; `Ok` may carry a warning to log.
pub fn run_dir(dir: &Path) -> Result<Option<String>, String> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    format!(
                        "cannot create the run directory {}: {e} (run as root, under systemd with \
                         RuntimeDirectory=, or pass --run-dir DIR for a directory you own)",
                        dir.display()
                    )
                })?;
            // The umask may have taken bits away, never added; be exact.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot set mode 0700 on {}: {e}", dir.display()))?;
            Ok(None)
        }
        Err(e) => Err(format!("run directory {}: {e}", dir.display())),
        Ok(m) => check_existing(dir, m.is_dir(), m.uid(), m.mode(), euid()),
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The rules for a run directory that already exists (pure, for tests).
pub fn check_existing(
    dir: &Path,
    is_dir: bool,
    owner: u32,
    mode: u32,
    me: u32,
) -> Result<Option<String>, String> {
    let d = dir.display();
    if !is_dir {
        return Err(format!(
            "run directory {d} exists and is not a directory (a symbolic link is refused too)"
        ));
    }
    if owner != me {
        return Err(format!(
            "run directory {d} is owned by uid {owner}, not by this process (uid {me}): its \
             owner could replace the upgrade socket; remove it or pass --run-dir"
        ));
    }
    let perm = mode & 0o777;
    if perm & 0o022 != 0 {
        return Err(format!(
            "run directory {d} has mode {perm:04o}: it must not be writable by group or others, \
             who could replace the upgrade socket (chmod 700 {d})"
        ));
    }
    if perm & 0o077 != 0 {
        return Ok(Some(format!(
            "run directory {d} has mode {perm:04o}: group and others can see the pid file and \
             upgrade socket (chmod 700 {d})"
        )));
    }
    Ok(None)
}

/// `$NOTIFY_SOCKET`'s address: a path, or `@name` for an abstract socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl NotifyAddr {
    pub fn parse(v: &str) -> Option<NotifyAddr> {
        if let Some(name) = v.strip_prefix('@') {
            return Some(NotifyAddr::Abstract(name.as_bytes().to_vec()));
        }
        v.starts_with('/')
            .then(|| NotifyAddr::Path(PathBuf::from(v)))
    }
}

/// Sends `sd_notify(3)` messages.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: NotifyAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when not run by a service manager that
    /// listens (or the value is not an address).
    pub fn from_env() -> Option<Notifier> {
        let v = std::env::var("NOTIFY_SOCKET").ok()?;
        NotifyAddr::parse(&v).map(|addr| Notifier { addr })
    }

    pub fn new(addr: NotifyAddr) -> Notifier {
        Notifier { addr }
    }

    /// Sends one message (`READY=1`, `WATCHDOG=1`, ...).
    pub fn notify(&self, msg: &str) -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match &self.addr {
            NotifyAddr::Path(p) => sock.send_to(msg.as_bytes(), p)?,
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &a)?
            }
        };
        Ok(())
    }
}

/// How often to ping: half of `$WATCHDOG_USEC`, if that is set, a number
/// above zero, and meant for this process (`$WATCHDOG_PID`, when set).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let us: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(us) / 2)
}

/// Readiness and watchdog keep-alives, as a pingora background service.
pub struct Watchdog {
    pub notifier: Notifier,
    /// Ping this often (half of `WatchdogSec`); `None`: readiness only.
    pub interval: Option<Duration>,
    /// The scrape loop's heartbeat: pings stop when it is older than the
    /// interval.
    pub heartbeat: Arc<Heartbeat>,
    /// The listeners that must accept before `READY=1`.
    pub listeners: Vec<SocketAddr>,
}

/// Longest wait for the listeners before `READY=1` is sent anyway (systemd's
/// start timeout decides what happens then).
const READY_WAIT: Duration = Duration::from_secs(60);

impl Watchdog {
    /// From the environment systemd sets; `None` outside a notify service.
    pub fn from_env(heartbeat: Arc<Heartbeat>, listeners: Vec<SocketAddr>) -> Option<Watchdog> {
        let notifier = Notifier::from_env()?;
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Some(Watchdog {
            notifier,
            interval,
            heartbeat,
            listeners,
        })
    }

    /// Whether to ping now: the scrape loop beat within `interval`.
    pub fn alive(&self, now: Instant, interval: Duration) -> bool {
        self.heartbeat.age(now) <= interval
    }

    async fn wait_for_listeners(&self) {
        let give_up = Instant::now() + READY_WAIT;
        for addr in &self.listeners {
            loop {
                let connect = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                    break;
                }
                if Instant::now() > give_up {
                    tracing::warn!(%addr, "listener not accepting; sending READY=1 anyway");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Watchdog {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.wait_for_listeners() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = self.notifier.notify("READY=1") {
            tracing::warn!(error = %e, "sd_notify READY=1 failed");
        }
        let Some(interval) = self.interval else {
            return;
        };
        tracing::info!(every = ?interval, "systemd watchdog keep-alives");
        let mut tick = tokio::time::interval(interval);
        let mut silent = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                at = tick.tick() => {
                    if self.alive(at, interval) {
                        if silent {
                            tracing::info!("scrape loop beats again; watchdog keep-alives resume");
                            silent = false;
                        }
                        if let Err(e) = self.notifier.notify("WATCHDOG=1") {
                            tracing::warn!(error = %e, "sd_notify WATCHDOG=1 failed");
                        }
                    } else if !silent {
                        tracing::error!(
                            age = ?self.heartbeat.age(at),
                            "scrape loop stalled; watchdog keep-alives stop (systemd will restart the service)"
                        );
                        silent = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_precedence() {
        let flag = Some(PathBuf::from("/x"));
        assert_eq!(run_dir_path(flag, Some("/run/a")), PathBuf::from("/x"));
        assert_eq!(
            run_dir_path(None, Some("/run/a:/run/b")),
            PathBuf::from("/run/a")
        );
        assert_eq!(run_dir_path(None, Some("")), PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(run_dir_path(None, None), PathBuf::from(DEFAULT_RUN_DIR));
    }

    #[test]
    fn existing_run_dir_rules() {
        let d = Path::new("/run/sluice");
        assert_eq!(check_existing(d, true, 7, 0o40700, 7), Ok(None));
        let w = check_existing(d, true, 7, 0o40755, 7).unwrap().unwrap();
        assert!(w.contains("mode 0755"), "{w}");
        let e = check_existing(d, true, 7, 0o40777, 7).unwrap_err();
        assert!(e.contains("mode 0777") && e.contains("writable"), "{e}");
        let e = check_existing(d, true, 7, 0o40720, 7).unwrap_err();
        assert!(e.contains("mode 0720"), "{e}");
        let e = check_existing(d, true, 0, 0o40700, 7).unwrap_err();
        assert!(e.contains("owned by uid 0"), "{e}");
        let e = check_existing(d, false, 7, 0o120777, 7).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn run_dir_is_created_private_and_loose_one_refused() {
        let base = std::env::temp_dir().join(format!("sluice-rundir-{}", rand::random::<u64>()));
        let dir = base.join("a/b");
        assert_eq!(run_dir(&dir), Ok(None));
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(run_dir(&dir), Ok(None), "an existing private one is fine");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = run_dir(&dir).unwrap_err();
        assert!(e.contains("mode 0777"), "{e}");
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(run_dir(&link).unwrap_err().contains("not a directory"));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn notify_socket_addresses() {
        assert_eq!(
            NotifyAddr::parse("/run/systemd/notify"),
            Some(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyAddr::parse("@/org/freedesktop/systemd1/notify/1"),
            Some(NotifyAddr::Abstract(
                b"/org/freedesktop/systemd1/notify/1".to_vec()
            ))
        );
        assert_eq!(NotifyAddr::parse("vsock:2:1"), None);
    }

    #[test]
    fn watchdog_usec() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 1),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("1"), 1),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("2"), 1), None);
        assert_eq!(watchdog_interval(Some("0"), None, 1), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 1), None);
        assert_eq!(watchdog_interval(None, None, 1), None);
    }

    #[test]
    fn notifier_reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(NotifyAddr::Path(path))
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sluice-test-{}", rand::random::<u64>());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&a).unwrap();
        Notifier::new(NotifyAddr::parse(&format!("@{name}")).unwrap())
            .notify("WATCHDOG=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[tokio::test(start_paused = true)]
    async fn pings_only_while_the_heartbeat_is_fresh() {
        let hb = Arc::new(Heartbeat::new(Instant::now()));
        let w = Watchdog {
            notifier: Notifier::new(NotifyAddr::Path("/nonexistent".into())),
            interval: Some(Duration::from_secs(15)),
            heartbeat: Arc::clone(&hb),
            listeners: vec![],
        };
        let i = Duration::from_secs(15);
        assert!(w.alive(Instant::now(), i));
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(!w.alive(Instant::now(), i), "no beat for 16 s");
        hb.beat(Instant::now());
        assert!(w.alive(Instant::now(), i));
    }
}
