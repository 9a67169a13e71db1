//! Loopback helpers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `count` distinct free loopback ports below the kernel's ephemeral range (32768 and up by default), for
/// a test that needs many listeners at once: [`free_port`]'s ports come from the ephemeral range, where
/// every outgoing connection on the machine may take one of them before the listener binds. The search
/// starts at a place of its own (from the process id and the clock), so concurrent runs spread out.
pub fn free_ports_below_ephemeral(count: usize) -> Vec<u16> {
    const FIRST: u32 = 10_000;
    const END: u32 = 32_768;
    let span = END - FIRST;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (std::process::id().wrapping_mul(7919) ^ nanos) % span;
    let ports: Vec<u16> = (0..span)
        .map(|i| (FIRST + (start + i) % span) as u16)
        .filter(|port| TcpListener::bind(local(*port)).is_ok())
        .take(count)
        .collect();
    assert_eq!(ports.len(), count, "not enough free ports below 32768");
    ports
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects with a bounded timeout.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&local(port), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}
