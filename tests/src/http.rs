//! A tiny HTTP/1.1 client for the admin endpoints (one request per connection, bounded).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `(status, body)` of `GET path`.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(address, "GET", path, &[], None)
}

/// `(status, body)` of one request with extra `headers` and an optional body.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    // The caller may name the host (a DNS-rebinding test does); else it is the address.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        // JSON unless the caller names another type.
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// The dataplane's `/stats`, parsed.
pub fn stats(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = get(admin, "/stats").expect("/stats answers");
    assert_eq!(status, 200, "/stats: {body}");
    serde_json::from_str(&body).expect("/stats is JSON")
}

/// One backend of one service in a `/stats` document, if it is listed.
pub fn find_backend<'a>(
    stats: &'a serde_json::Value,
    service: &str,
    address: &str,
) -> Option<&'a serde_json::Value> {
    stats["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address)
}

/// Connections accepted by all workers, from a `/stats` document.
pub fn accepted_total(stats: &serde_json::Value) -> u64 {
    stats["workers"]
        .as_array()
        .expect("/stats lists workers")
        .iter()
        .map(|w| w["accepted"].as_u64().unwrap_or(0))
        .sum()
}

/// One service of a `/stats` document, if it is listed.
pub fn find_service<'a>(
    stats: &'a serde_json::Value,
    service: &str,
) -> Option<&'a serde_json::Value> {
    stats["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)
}

/// Connections of `service` that ended for `reason` (`/stats` → `services[].closes`); 0 if not listed.
pub fn close_count(stats: &serde_json::Value, service: &str, reason: &str) -> u64 {
    find_service(stats, service)
        .and_then(|s| s["closes"][reason].as_u64())
        .unwrap_or(0)
}

/// Sum of one per-worker figure of a `/stats` document (0 where absent).
pub fn workers_sum(stats: &serde_json::Value, field: &str) -> u64 {
    stats["workers"]
        .as_array()
        .map(|w| w.iter().map(|w| w[field].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}
