//! Load for the fault suite: an echo backend and clients on small tokio runtimes, so tens of thousands of
//! connections (200,000 short ones, 10,000 idle ones) cost tasks and sockets, not threads.
//!
//! Every connection's bytes come from [`PatternStream`], so each echoed byte is checked without keeping
//! a copy; every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::traffic::{PatternCheck, PatternStream};

/// Longest a client waits for its connect (a dataplane at its connection cap leaves clients in the kernel's
/// accept queue, where the handshake completes; a full queue makes the kernel retransmit the SYN).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one exchange may take once connected.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// A multi-threaded tokio runtime with `threads` workers.
pub fn runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Echoes every byte back and half-closes after the client's FIN, on its own one-thread runtime.
pub struct AsyncEcho {
    port: u16,
    accepted: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    // Dropped last: cancels the accept loop and closes every connection.
    _runtime: Runtime,
}

impl AsyncEcho {
    pub fn start() -> Self {
        let runtime = runtime(1);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(4096).unwrap();
        socket.set_nonblocking(true).unwrap();
        let std_listener = std::net::TcpListener::from(socket);
        let port = std_listener.local_addr().unwrap().port();
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(std_listener).unwrap()
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let (a, b) = (accepted.clone(), active.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                b.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    echo(stream).await;
                    b.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            active,
            _runtime: runtime,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Connects to `address`, waiting up to [`CONNECT_TIMEOUT`].
pub async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("connect: no answer in {CONNECT_TIMEOUT:?}")),
    }
}

/// One echo exchange: sends `len` pattern bytes for `seed`, half-closes, and expects exactly those bytes
/// back followed by a clean end. Writing and reading run together, so neither side stalls.
pub async fn exchange(address: SocketAddr, seed: u64, len: usize) -> Result<(), String> {
    let stream = connect(address).await?;
    let (mut reader, mut writer) = stream.into_split();
    let send = async move {
        let mut pattern = PatternStream::new(seed);
        let mut buf = vec![0u8; len.clamp(1, 64 * 1024)];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            pattern.fill(&mut buf[..n]);
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|e| format!("write: {e}"))?;
            left -= n;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))
    };
    let receive = async move {
        let mut check = PatternCheck::new(seed, len);
        let mut got = vec![0u8; len.clamp(1, 64 * 1024)];
        loop {
            let n = reader
                .read(&mut got)
                .await
                .map_err(|e| format!("read after {} of {len} bytes: {e}", check.received()))?;
            if n == 0 {
                return check.finish();
            }
            check.check(&got[..n])?;
        }
    };
    let both = async { tokio::join!(send, receive) };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, both).await {
        Ok((sent, received)) => received.and(sent),
        Err(_) => Err(format!("exchange not done in {EXCHANGE_TIMEOUT:?}")),
    }
}

/// What a batch of exchanges came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub completed: usize,
    pub failed: usize,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    fn record(&mut self, index: usize, result: Result<(), String>) {
        match result {
            Ok(()) => self.completed += 1,
            Err(e) => {
                self.failed += 1;
                if self.failures.len() < 5 {
                    self.failures.push(format!("connection {index}: {e}"));
                }
            }
        }
    }
}

/// Runs `total` exchanges of `len` bytes against `address`, `concurrency` at a time, stopping early once
/// `limit` has passed (then `completed + failed < total`).
pub fn run_exchanges(
    runtime: &Runtime,
    address: SocketAddr,
    total: usize,
    concurrency: usize,
    len: usize,
    limit: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + limit;
    let next = Arc::new(AtomicUsize::new(0));
    let mut outcome = runtime.block_on(async {
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.min(total) {
            let next = next.clone();
            tasks.spawn(async move {
                let mut mine = Outcome::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total || Instant::now() >= deadline {
                        return mine;
                    }
                    mine.record(index, exchange(address, index as u64 + 1, len).await);
                }
            });
        }
        let mut all = Outcome::default();
        while let Some(part) = tasks.join_next().await {
            let part = part.expect("exchange task panicked");
            all.completed += part.completed;
            all.failed += part.failed;
            all.failures.extend(
                part.failures
                    .into_iter()
                    .take(5 - all.failures.len().min(5)),
            );
        }
        all
    });
    outcome.elapsed = started.elapsed();
    outcome
}

/// Opens `count` connections to an echo service through `address` (`concurrency` connects at a time) and
/// checks each carries a byte both ways; returns them open and idle.
pub fn open_idle(
    runtime: &Runtime,
    address: SocketAddr,
    count: usize,
    concurrency: usize,
) -> Result<Vec<TcpStream>, String> {
    runtime.block_on(async {
        let mut open = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        let mut started = 0;
        while open.len() < count {
            while started < count && tasks.len() < concurrency {
                started += 1;
                tasks.spawn(async move {
                    let mut stream = connect(address).await?;
                    stream.write_all(b"x").await.map_err(|e| e.to_string())?;
                    let mut one = [0u8; 1];
                    let read = tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_exact(&mut one));
                    match read.await {
                        Ok(Ok(_)) if one == *b"x" => Ok(stream),
                        other => Err(format!("no echo: {other:?}")),
                    }
                });
            }
            let stream = tasks
                .join_next()
                .await
                .expect("a connect task is running")
                .expect("connect task panicked")
                .map_err(|e| format!("{e} ({} connections open)", open.len()))?;
            open.push(stream);
        }
        Ok(open)
    })
}

/// Closes connections opened by [`open_idle`] inside their runtime.
pub fn close_all(runtime: &Runtime, streams: Vec<TcpStream>) {
    runtime.block_on(async move { drop(streams) });
}
