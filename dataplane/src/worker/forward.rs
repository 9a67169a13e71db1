//! Moving one direction's bytes: the three forwarding modes.
//!
//! - `poll-splice` (default): after io_uring reports readiness, non-blocking `splice(2)` socket → pipe →
//!   socket runs inline on the pinned worker. Zero copies, no io-wq threads (see the design notes: an
//!   `IORING_OP_SPLICE` always runs on io-wq, two threads per idle connection, and can deadlock under a cap).
//! - `copy`: the same loop with `read`/`send` through a pooled buffer; the path L7 parsing will use.
//! - `uring-splice`: `IORING_OP_SPLICE` on non-blocking sockets, issued only after poll readiness, with
//!   io-wq capped and pinned; kept for measurement (see `docs/benchmarks.md`).
//!
//! In every mode a direction holds a pipe or buffer only while bytes are in transit, reads only when the
//! pipe is empty, and reports EOF ([`Step::SourceDone`]) only after every byte read was written. A splice
//! direction that can get no pipe (the pipe budget is spent, or descriptors are exhausted) copies that
//! turn's bytes through a buffer instead: a connection never fails for want of a pipe.

use std::io;
use std::os::fd::BorrowedFd;

use crate::pipes::{BufferPool, PipePool};
use crate::sys;

use super::conn::Flow;

/// How bytes move; chosen with `--forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardMode {
    PollSplice,
    UringSplice,
    Copy,
}

/// What a direction needs next.
#[derive(Debug)]
pub enum Step {
    /// Nothing to read now: wait until the source is readable.
    AwaitReadable,
    /// The destination is full: wait until it is writable.
    AwaitWritable,
    /// The source ended and every byte was delivered: pass the FIN on.
    SourceDone,
    /// This turn's byte budget is spent; continue later without waiting for readiness.
    Yield,
    /// Reading the source or writing the destination failed: bytes may be lost, so reset both sides.
    Failed(Side, io::Error),
}

/// Which socket of a direction an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The socket the direction reads from.
    Source,
    /// The socket the direction writes to.
    Destination,
}

/// The worker's pipes and buffers.
#[derive(Debug)]
pub struct Pools {
    pub pipes: PipePool,
    pub buffers: BufferPool,
    /// Splice turns that copied through a buffer because no pipe could be had.
    pub copied_turns: u64,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Where a direction's bytes wait between the read and the write: a kernel pipe (`poll-splice`) or a
/// user-space buffer (`copy`). [`pump`] is the one state machine over both.
trait Transit {
    /// Writes bytes in transit to `dst`; returns how many were taken.
    fn drain(flow: &mut Flow, dst: BorrowedFd<'_>) -> io::Result<usize>;
    /// Reads from `src` into the (empty) carrier, taking one from the pool first if needed.
    fn fill(flow: &mut Flow, src: BorrowedFd<'_>, pools: &mut Pools) -> io::Result<usize>;
    /// Gives an empty carrier back to the pool.
    fn release(flow: &mut Flow, pools: &mut Pools);
    /// Bytes one fill can take.
    fn capacity(flow: &Flow) -> usize;
}

/// Splice through a pipe; through a buffer when no pipe can be had.
struct PipeTransit;

impl Transit for PipeTransit {
    fn drain(flow: &mut Flow, dst: BorrowedFd<'_>) -> io::Result<usize> {
        if flow.buffer.is_some() {
            return BufferTransit::drain(flow, dst);
        }
        let pipe = flow.pipe.as_ref().expect("bytes in transit live in a pipe");
        sys::splice(pipe.read_end(), dst, flow.in_transit)
    }

    fn fill(flow: &mut Flow, src: BorrowedFd<'_>, pools: &mut Pools) -> io::Result<usize> {
        if flow.pipe.is_none() && flow.buffer.is_none() {
            match pools.pipes.take() {
                Some(pipe) => flow.pipe = Some(pipe),
                None => pools.copied_turns += 1,
            }
        }
        match &flow.pipe {
            Some(pipe) => sys::splice(src, pipe.write_end(), pipe.capacity()),
            None => BufferTransit::fill(flow, src, pools),
        }
    }

    fn release(flow: &mut Flow, pools: &mut Pools) {
        release_pipe(flow, pools);
        BufferTransit::release(flow, pools);
    }

    fn capacity(flow: &Flow) -> usize {
        match &flow.pipe {
            Some(pipe) => pipe.capacity(),
            None => BufferTransit::capacity(flow),
        }
    }
}

struct BufferTransit;

impl Transit for BufferTransit {
    fn drain(flow: &mut Flow, dst: BorrowedFd<'_>) -> io::Result<usize> {
        let buffer = flow
            .buffer
            .as_mut()
            .expect("bytes in transit live in a buffer");
        let n = sys::send(dst, &buffer.data[buffer.start..buffer.end])?;
        buffer.start += n;
        Ok(n)
    }

    fn fill(flow: &mut Flow, src: BorrowedFd<'_>, pools: &mut Pools) -> io::Result<usize> {
        let buffer = flow.buffer.get_or_insert_with(|| pools.buffers.take());
        let n = sys::read(src, &mut buffer.data)?;
        buffer.start = 0;
        buffer.end = n;
        Ok(n)
    }

    fn release(flow: &mut Flow, pools: &mut Pools) {
        if flow.in_transit == 0
            && let Some(buffer) = flow.buffer.take()
        {
            pools.buffers.give_back(buffer);
        }
    }

    fn capacity(flow: &Flow) -> usize {
        flow.buffer.as_ref().map_or(0, |b| b.data.len())
    }
}

/// One turn of a direction: write what is in transit, then read more while the budget lasts. Returns the
/// next step and the bytes delivered.
fn pump<T: Transit>(
    flow: &mut Flow,
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    pools: &mut Pools,
    budget: usize,
) -> (Step, usize) {
    let mut delivered = 0;
    // A read that did not fill the carrier emptied the socket's receive queue (at that moment): after
    // delivering it, wait for readiness instead of paying a read that would say EAGAIN. If more arrived
    // meanwhile, the poll completes at once.
    let mut source_emptied = false;
    loop {
        if flow.in_transit > 0 {
            match T::drain(flow, dst) {
                Ok(n) => {
                    flow.in_transit -= n;
                    delivered += n;
                    continue;
                }
                Err(e) if would_block(&e) => return (Step::AwaitWritable, delivered),
                Err(e) => return (Step::Failed(Side::Destination, e), delivered),
            }
        }
        if flow.source_closed {
            T::release(flow, pools);
            return (Step::SourceDone, delivered);
        }
        if source_emptied {
            T::release(flow, pools);
            return (Step::AwaitReadable, delivered);
        }
        if delivered >= budget {
            T::release(flow, pools);
            return (Step::Yield, delivered);
        }
        match T::fill(flow, src, pools) {
            Ok(0) => flow.source_closed = true,
            Ok(n) => {
                flow.in_transit = n;
                source_emptied = n < T::capacity(flow);
            }
            Err(e) if would_block(&e) => {
                T::release(flow, pools);
                return (Step::AwaitReadable, delivered);
            }
            Err(e) => return (Step::Failed(Side::Source, e), delivered),
        }
    }
}

/// One turn of `poll-splice`.
pub fn pump_splice(
    flow: &mut Flow,
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    pools: &mut Pools,
    budget: usize,
) -> (Step, usize) {
    pump::<PipeTransit>(flow, src, dst, pools, budget)
}

/// One turn of `copy`: the same state machine through a user-space buffer.
pub fn pump_copy(
    flow: &mut Flow,
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    pools: &mut Pools,
    budget: usize,
) -> (Step, usize) {
    pump::<BufferTransit>(flow, src, dst, pools, budget)
}

/// Returns an empty pipe to the pool. A pipe that still holds bytes is never pooled.
pub fn release_pipe(flow: &mut Flow, pools: &mut Pools) {
    if flow.in_transit == 0
        && let Some(pipe) = flow.pipe.take()
    {
        pools.pipes.give_back(pipe);
    }
}

/// What `uring-splice` should submit next for a direction with no op in flight.
#[derive(Debug)]
pub enum UringStep {
    /// Splice from the source into the pipe (`len` bytes at most).
    SpliceIn {
        len: u32,
    },
    /// Splice from the pipe to the destination.
    SpliceOut {
        len: u32,
    },
    AwaitReadable,
    SourceDone,
    /// No pipe could be had (or a copy is under way): run this turn inline through a buffer
    /// ([`pump_copy`]).
    Copy,
}

/// Decides `uring-splice`'s next op. `after_write` is true right after a write drained the pipe: then a
/// read that did not fill the pipe last time means the socket is probably empty, so poll first rather
/// than pay an io-wq round trip for `EAGAIN`.
pub fn next_uring_step(flow: &mut Flow, pools: &mut Pools, after_write: bool) -> UringStep {
    if flow.buffer.is_some() {
        return UringStep::Copy;
    }
    if flow.in_transit > 0 {
        return UringStep::SpliceOut {
            len: flow.in_transit.min(u32::MAX as usize) as u32,
        };
    }
    if flow.source_closed {
        release_pipe(flow, pools);
        return UringStep::SourceDone;
    }
    if after_write && !flow.last_read_full {
        release_pipe(flow, pools);
        return UringStep::AwaitReadable;
    }
    if flow.pipe.is_none() {
        match pools.pipes.take() {
            Some(pipe) => flow.pipe = Some(pipe),
            None => {
                pools.copied_turns += 1;
                return UringStep::Copy;
            }
        }
    }
    let capacity = flow.pipe.as_ref().map(|p| p.capacity()).unwrap_or(0);
    UringStep::SpliceIn {
        len: capacity.min(u32::MAX as usize) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipes::{BufferPool, PipeBudget, PipePool};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn pools_with(pipe_budget: u32) -> Pools {
        Pools {
            pipes: PipePool::new(Arc::new(PipeBudget::new(pipe_budget, 64 * 1024, 1))),
            buffers: BufferPool::new(16 * 1024),
            copied_turns: 0,
        }
    }

    fn pools() -> Pools {
        pools_with(u32::MAX)
    }

    type Pump = fn(&mut Flow, BorrowedFd<'_>, BorrowedFd<'_>, &mut Pools, usize) -> (Step, usize);

    /// A writer sends a payload and closes; the pump must deliver all of it and only then report EOF.
    fn delivers_everything_then_eof(pump: Pump) {
        let (mut client, src) = UnixStream::pair().unwrap();
        let (dst, mut server) = UnixStream::pair().unwrap();
        for s in [&src, &dst, &server] {
            s.set_nonblocking(true).unwrap();
        }
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            std::thread::spawn(move || client.write_all(&payload).unwrap())
        };
        let (mut pools, mut flow) = (pools(), Flow::default());
        let (mut received, mut buf) = (Vec::new(), vec![0u8; 65536]);
        let mut drain = |received: &mut Vec<u8>| {
            while let Ok(n) = server.read(&mut buf) {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
        };
        let mut finished = false;
        for _ in 0..1_000_000 {
            let (step, _) = pump(&mut flow, src.as_fd(), dst.as_fd(), &mut pools, 1 << 20);
            drain(&mut received);
            match step {
                Step::SourceDone => {
                    finished = true;
                    break;
                }
                Step::Failed(_, e) => panic!("{e}"),
                _ => std::thread::yield_now(),
            }
        }
        drain(&mut received);
        writer.join().unwrap();
        assert!(finished, "EOF was never reported");
        assert_eq!(received.len(), payload.len());
        assert!(received == payload, "bytes differ");
        assert_eq!(flow.in_transit, 0);
    }

    #[test]
    fn splice_pump_delivers_everything() {
        delivers_everything_then_eof(pump_splice);
    }

    /// With no pipe to be had, a splice direction copies through a buffer and still delivers every byte.
    fn splice_without_pipes(
        flow: &mut Flow,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        _pools: &mut Pools,
        budget: usize,
    ) -> (Step, usize) {
        let mut no_pipes = pools_with(0);
        let result = pump_splice(flow, src, dst, &mut no_pipes, budget);
        assert!(flow.pipe.is_none(), "no pipe was handed out");
        result
    }

    #[test]
    fn splice_pump_without_pipes_copies_and_delivers_everything() {
        delivers_everything_then_eof(splice_without_pipes);
    }

    #[test]
    fn copy_pump_delivers_everything() {
        delivers_everything_then_eof(pump_copy);
    }

    #[test]
    fn write_to_a_closed_destination_fails_instead_of_dropping_bytes() {
        for pump in [pump_splice as Pump, pump_copy as Pump] {
            let (mut client, src) = UnixStream::pair().unwrap();
            let (dst, server) = UnixStream::pair().unwrap();
            src.set_nonblocking(true).unwrap();
            dst.set_nonblocking(true).unwrap();
            drop(server);
            client.write_all(b"lost?").unwrap();
            let mut pools = pools();
            let mut flow = Flow::default();
            let (step, delivered) = pump(&mut flow, src.as_fd(), dst.as_fd(), &mut pools, 1 << 20);
            assert!(
                matches!(step, Step::Failed(Side::Destination, _)),
                "got {step:?}"
            );
            assert_eq!(delivered, 0);
        }
    }

    #[test]
    fn a_full_read_over_budget_yields_and_returns_the_pipe() {
        let (mut client, src) = UnixStream::pair().unwrap();
        let (dst, mut server) = UnixStream::pair().unwrap();
        src.set_nonblocking(true).unwrap();
        dst.set_nonblocking(true).unwrap();
        let writer = std::thread::spawn(move || client.write_all(&vec![7u8; 4 << 20]));
        let reader = std::thread::spawn(move || std::io::copy(&mut server, &mut std::io::sink()));
        let (mut pools, mut flow) = (pools(), Flow::default());
        let mut yielded = false;
        for _ in 0..100_000 {
            let (step, _) = pump_splice(&mut flow, src.as_fd(), dst.as_fd(), &mut pools, 1);
            if matches!(step, Step::Yield) {
                yielded = true;
                break;
            }
        }
        assert!(
            yielded,
            "a read that filled the pipe, once delivered, spends the budget"
        );
        assert!(flow.pipe.is_none(), "an empty pipe goes back to the pool");
        assert_eq!(pools.pipes.idle(), 1);
        drop((src, dst));
        let _ = writer.join();
        let _ = reader.join();
    }

    #[test]
    fn a_short_read_is_delivered_and_then_waits_without_another_read() {
        let (mut client, src) = UnixStream::pair().unwrap();
        let (dst, mut server) = UnixStream::pair().unwrap();
        src.set_nonblocking(true).unwrap();
        dst.set_nonblocking(true).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (mut pools, mut flow) = (pools(), Flow::default());
        let (step, delivered) =
            pump_splice(&mut flow, src.as_fd(), dst.as_fd(), &mut pools, 1 << 20);
        assert!(matches!(step, Step::AwaitReadable), "got {step:?}");
        assert_eq!(delivered, 18);
        let mut got = [0u8; 18];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
        assert!(flow.pipe.is_none());
    }
}
