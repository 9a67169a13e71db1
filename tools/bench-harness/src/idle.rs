//! Figure 5: memory per idle proxied connection.
//!
//! The harness's own backend accepts and holds connections; each client connection sends one byte through
//! the proxy and waits for it to come back, so the proxy has a live, established backend connection and
//! has moved data on it (lazily allocated buffers included), then everything stays idle. RSS of all the
//! proxy's processes is read before and after; the growth divided by the count is the cost of one idle
//! proxied connection. Connections are opened one at a time, so no accept backlog or connect burst is
//! involved, and every step has a timeout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cpu;
use crate::targets::{IDLE_BACKEND, local};

/// Each connect, and each one-byte echo, must finish within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to the proxy to settle before RSS is read (freeing transit buffers, finishing accepts).
const SETTLE: Duration = Duration::from_millis(500);
/// The whole figure for one target may not take longer than this.
const FIGURE_LIMIT: Duration = Duration::from_secs(120);

/// Accepts connections on [`IDLE_BACKEND`], echoes one byte on each, and keeps them open until stopped.
pub struct HoldBackend {
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl HoldBackend {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(local(IDLE_BACKEND))
            .with_context(|| format!("binding the idle backend on {IDLE_BACKEND}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, held) = (Arc::clone(&stop), Arc::clone(&held));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
                    let mut byte = [0u8; 1];
                    if stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {
                        held.lock().unwrap().push(stream);
                    }
                }
            })
        };
        Ok(Self {
            stop,
            held,
            thread: Some(thread),
        })
    }

    /// Closes every held connection.
    pub fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

impl Drop for HoldBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&local(IDLE_BACKEND), STEP_TIMEOUT);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.release();
    }
}

/// What figure 5 measured for one target.
#[derive(Debug, Clone, Copy)]
pub struct IdleMemory {
    pub connections: usize,
    pub rss_before: u64,
    pub rss_after: u64,
}

impl IdleMemory {
    /// RSS growth per connection, in KiB.
    pub fn kib_per_connection(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / 1024.0 / self.connections as f64
    }
}

/// Opens `count` idle connections through `port`, reads the RSS of `proxy_roots`' process trees before and
/// after, and closes them again.
pub fn measure(
    backend: &HoldBackend,
    port: u16,
    proxy_roots: &[i32],
    count: usize,
) -> anyhow::Result<IdleMemory> {
    backend.release();
    std::thread::sleep(SETTLE);
    let rss_before = cpu::rss_bytes(&cpu::trees(proxy_roots));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        if started.elapsed() > FIGURE_LIMIT {
            bail!("only {i} of {count} idle connections opened in {FIGURE_LIMIT:?}");
        }
        let mut s = TcpStream::connect_timeout(&local(port), STEP_TIMEOUT)
            .with_context(|| format!("idle connection {i} to {port}"))?;
        s.set_read_timeout(Some(STEP_TIMEOUT))?;
        s.write_all(b"x")?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte)
            .with_context(|| format!("idle connection {i} through {port}: no echo"))?;
        clients.push(s);
    }
    std::thread::sleep(SETTLE);
    let rss_after = cpu::rss_bytes(&cpu::trees(proxy_roots));
    drop(clients);
    backend.release();
    Ok(IdleMemory {
        connections: count,
        rss_before,
        rss_after,
    })
}
