//! A backend that replays a real llama-server capture byte for byte: the
//! 2026-10 `/metrics`, `/props` and a chat stream sent event by event with a
//! pause between events. Used where the exact bytes matter.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/llama-server/2026-10"
);

/// The body of a capture (after the HTTP head, if it has one).
pub fn capture_body(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap();
    if text.starts_with("HTTP/") {
        let (_, body) = text
            .split_once("\r\n\r\n")
            .or_else(|| text.split_once("\n\n"))
            .unwrap();
        body.to_string()
    } else {
        text
    }
}

/// SSE events of the chat-stream capture, each with its blank-line terminator.
pub fn stream_events() -> Vec<String> {
    capture_body("chat-stream.txt")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect()
}

/// Serves until the runtime stops; returns the address.
pub async fn spawn(gap: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request head (and its body, by content-length).
                    let head_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let ok = match path.as_str() {
                        "/health" => plain(&mut s, "application/json", "{\"status\":\"ok\"}").await,
                        "/metrics" => {
                            plain(
                                &mut s,
                                "text/plain; version=0.0.4",
                                &capture_body("metrics-idle.txt"),
                            )
                            .await
                        }
                        "/props" => {
                            plain(&mut s, "application/json", &capture_body("props.json")).await
                        }
                        _ => stream(&mut s, gap).await,
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

async fn plain(s: &mut tokio::net::TcpStream, ct: &str, body: &str) -> bool {
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nKeep-Alive: timeout=5, max=100\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await.is_ok()
}

async fn stream(s: &mut tokio::net::TcpStream, gap: Duration) -> bool {
    let head = "HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nX-Accel-Buffering: no\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5, max=100\r\n\r\n";
    if s.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    for ev in stream_events() {
        let chunk = format!("{:x}\r\n{ev}\r\n", ev.len());
        if s.write_all(chunk.as_bytes()).await.is_err() {
            return false;
        }
        let _ = s.flush().await;
        tokio::time::sleep(gap).await;
    }
    s.write_all(b"0\r\n\r\n").await.is_ok()
}
