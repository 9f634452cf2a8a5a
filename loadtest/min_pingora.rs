//! The floor: a pingora 0.9 `ProxyHttp` with no logic at all, measured the
//! same way as Sluice (`loadtest/overhead.sh --min-pingora`, the `pingora`
//! target of `loadtest/bench`). Requests go to the upstreams in turn (one
//! atomic add) over pooled keep-alive connections; nothing is read, counted
//! or added.
//!
//!     cargo build --release --example min_pingora
//!     target/release/examples/min_pingora LISTEN UPSTREAM[,UPSTREAM...] [THREADS] [default-buffers]
//!
//! With `default-buffers` the listener keeps pingora's own L4 buffer sizes
//! (64 KiB read, 1,460 B write); without it, Sluice's (see
//! `src/proxy/listener.rs`), so the two compare like for like. It uses
//! jemalloc, as Sluice's binary does (`src/main.rs`): resident memory per
//! open stream depends on the allocator (loadtest/RESULTS.md, "Memory per
//! open stream: where it goes").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Bare {
    upstreams: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        Ok(Box::new(HttpPeer::new(
            self.upstreams[i],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: min_pingora LISTEN UPSTREAM[,UPSTREAM...] [THREADS] [default-buffers]");
        std::process::exit(2);
    }
    let listen = &args[1];
    let upstreams: Vec<SocketAddr> = args[2]
        .split(',')
        .map(|u| u.parse().expect("UPSTREAM is host:port"))
        .collect();
    let threads: usize = args
        .get(3)
        .map_or(1, |t| t.parse().expect("THREADS is a number"));
    let default_buffers = args.get(4).is_some_and(|a| a == "default-buffers");

    let conf = ServerConf {
        threads,
        pid_file: format!("/tmp/min_pingora-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/min_pingora-{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstreams,
            next: AtomicUsize::new(0),
        },
    );
    proxy.threads = Some(threads);
    let endpoint = ListenerConfig::tcp(listen.as_str());
    proxy.add_listener(if default_buffers {
        endpoint
    } else {
        endpoint.l4_buffer(L4BufferSettings::new(0, 8 * 1024))
    });
    server.add_service(proxy);
    server.run_forever();
}
