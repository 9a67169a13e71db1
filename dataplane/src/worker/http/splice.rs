//! Large bodies with splice: when the session says [`Read::Splice`]`(n)` for a socket, its receive is
//! stopped and, once every send to the other socket has completed, up to `n` bytes move socket → pipe →
//! socket inline (non-blocking `splice(2)`, as the TCP path's `poll-splice`), with a readiness poll when
//! either side would block. Each delivery is reported to the session as [`Event::Spliced`].
//!
//! Never more than `n` bytes are read, so a pipelined request (or anything after the body) stays in the
//! socket for the buffered path. A session that can get no pipe (the pipe budget is spent) receives the
//! body through the buffered path instead, which the session accepts as well.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::http::session::{Direction, Event, Read};
use crate::pipes::Pipe;
use crate::sys;
use crate::worker::ring::{Completion, OpKind, UserData};
use crate::worker::{TURN_BUDGET, Worker};

use super::{End, Recv};

/// One direction's spliced body.
#[derive(Debug, Default)]
pub struct SpliceFlow {
    pub pipe: Option<Pipe>,
    /// Bytes read into the pipe and not yet written out (reported to the session once written).
    pub in_pipe: usize,
    /// A readiness poll is in flight.
    pub polling: bool,
    /// This turn's budget is spent: continue next turn.
    pub yielded: bool,
    /// The poll in flight was cancelled (the session is closing).
    pub cancelled: bool,
}

/// The flow index and poll op of a direction.
pub(super) fn slot(direction: Direction) -> (usize, OpKind) {
    match direction {
        Direction::ClientToBackend => (0, OpKind::HttpSpliceUp),
        Direction::BackendToClient => (1, OpKind::HttpSpliceDown),
    }
}

/// How one pump ended.
enum Outcome {
    /// The `n` bytes asked for were delivered.
    Done,
    AwaitReadable,
    AwaitWritable,
    Yield,
    SourceEof,
    /// Reading the source (`true`) or writing the destination failed.
    Failed {
        source: bool,
    },
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Moves up to `limit` body bytes (counting those already in the pipe) from `src` to `dst`.
fn pump(
    flow: &mut SpliceFlow,
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    limit: u64,
) -> (Outcome, usize) {
    let pipe = flow.pipe.as_ref().expect("a splicing flow has a pipe");
    let mut can_read = limit.saturating_sub(flow.in_pipe as u64);
    let mut delivered = 0;
    loop {
        if flow.in_pipe > 0 {
            match sys::splice(pipe.read_end(), dst, flow.in_pipe) {
                Ok(0) => return (Outcome::AwaitWritable, delivered),
                Ok(n) => {
                    flow.in_pipe -= n;
                    delivered += n;
                    continue;
                }
                Err(e) if would_block(&e) => return (Outcome::AwaitWritable, delivered),
                Err(_) => return (Outcome::Failed { source: false }, delivered),
            }
        }
        if can_read == 0 {
            return (Outcome::Done, delivered);
        }
        if delivered >= TURN_BUDGET {
            return (Outcome::Yield, delivered);
        }
        let len = can_read.min(pipe.capacity() as u64) as usize;
        match sys::splice(src, pipe.write_end(), len) {
            Ok(0) => return (Outcome::SourceEof, delivered),
            Ok(n) => {
                flow.in_pipe = n;
                can_read -= n as u64;
            }
            Err(e) if would_block(&e) => return (Outcome::AwaitReadable, delivered),
            Err(_) => return (Outcome::Failed { source: true }, delivered),
        }
    }
}

impl Worker {
    /// For each direction the session wants spliced, takes a pipe (so its receive stays off); gives
    /// back the empty pipes of directions that no longer splice.
    pub(super) fn prepare_splices(&mut self, handle: (u32, u32)) {
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        let reads = [s.http.client_read(), s.http.backend_read()];
        for (flow, read) in s.splice.iter_mut().zip(reads) {
            let splicing = matches!(read, Read::Splice(_)) && s.end == End::Open;
            if splicing && flow.pipe.is_none() {
                flow.pipe = self.pools.pipes.take();
            } else if !splicing
                && flow.in_pipe == 0
                && !flow.polling
                && let Some(pipe) = flow.pipe.take()
            {
                self.pools.pipes.give_back(pipe);
            }
        }
    }

    /// Runs the session's spliced bodies that can move now.
    pub(super) fn run_splices(&mut self, handle: (u32, u32)) {
        for direction in [Direction::ClientToBackend, Direction::BackendToClient] {
            self.run_splice(handle, direction);
        }
    }

    fn run_splice(&mut self, handle: (u32, u32), direction: Direction) {
        let now = self.now_ms;
        let (i, poll_op) = slot(direction);
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        let read = match direction {
            Direction::ClientToBackend => s.http.client_read(),
            Direction::BackendToClient => s.http.backend_read(),
        };
        let Read::Splice(limit) = read else {
            return;
        };
        let flow = &s.splice[i];
        if s.end != End::Open || flow.polling || flow.yielded || flow.pipe.is_none() {
            return;
        }
        let Some(b) = s
            .backend
            .and_then(|(bi, bg)| self.http.backends.get_mut(bi, bg))
        else {
            return;
        };
        // The source's receive has stopped and every send to the destination has completed.
        let ready = match direction {
            Direction::ClientToBackend => s.recv == Recv::Off && b.out.is_idle(),
            Direction::BackendToClient => b.recv == Recv::Off && s.out.is_idle(),
        };
        if !b.connected || !ready {
            return;
        }
        let (src, dst) = match direction {
            Direction::ClientToBackend => (s.fd.as_fd(), b.fd.as_fd()),
            Direction::BackendToClient => (b.fd.as_fd(), s.fd.as_fd()),
        };
        let (outcome, delivered) = pump(&mut s.splice[i], src, dst, limit);
        let op = UserData::new(poll_op, handle.0, handle.1);
        match outcome {
            Outcome::AwaitReadable => {
                s.splice[i].polling = true;
                self.ring.poll(src.as_raw_fd(), libc::POLLIN, op);
            }
            Outcome::AwaitWritable => {
                s.splice[i].polling = true;
                self.ring.poll(dst.as_raw_fd(), libc::POLLOUT, op);
            }
            Outcome::Yield => {
                s.splice[i].yielded = true;
                self.http.ready.push(handle);
            }
            Outcome::Done | Outcome::SourceEof | Outcome::Failed { .. } => {}
        }
        if delivered > 0 {
            s.last_active_ms = now;
            match direction {
                Direction::ClientToBackend => self.stats.bytes_up.add(delivered as u64),
                Direction::BackendToClient => self.stats.bytes_down.add(delivered as u64),
            }
        }
        let after = match (outcome, direction) {
            (Outcome::SourceEof, Direction::ClientToBackend) => {
                s.eof = true;
                Some(Event::ClientEof)
            }
            (Outcome::SourceEof, Direction::BackendToClient) => {
                b.eof = true;
                Some(Event::BackendEof)
            }
            (Outcome::Failed { source }, _) => {
                let client = source == (direction == Direction::ClientToBackend);
                Some(if client {
                    Event::ClientError
                } else {
                    Event::BackendError
                })
            }
            _ => None,
        };
        if delivered > 0 {
            self.session_event(
                handle,
                Event::Spliced {
                    direction,
                    bytes: delivered as u64,
                },
            );
        }
        if let Some(event) = after {
            self.session_event(handle, event);
        }
    }

    /// A splice's readiness poll completed: try again.
    pub(in crate::worker) fn on_splice_poll(&mut self, completion: Completion) {
        let handle = (completion.op.index, completion.op.generation);
        let (i, _) = slot(match completion.op.kind {
            OpKind::HttpSpliceUp => Direction::ClientToBackend,
            _ => Direction::BackendToClient,
        });
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            debug_assert!(false, "completion for a freed session slot");
            return;
        };
        s.splice[i].polling = false;
        self.reconcile_session(handle);
    }

    /// Continues spliced bodies that used up their turn's budget.
    pub(in crate::worker) fn run_http_ready(&mut self) {
        for handle in std::mem::take(&mut self.http.ready) {
            if let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) {
                for flow in &mut s.splice {
                    flow.yielded = false;
                }
                self.reconcile_session(handle);
            }
        }
    }

    /// Cancels a closing session's splice polls and gives back its pipes (a pipe that still holds
    /// bytes is closed, never pooled).
    pub(super) fn stop_splices(&mut self, handle: (u32, u32)) {
        let Some(s) = self.http.sessions.get_mut(handle.0, handle.1) else {
            return;
        };
        for (i, flow) in s.splice.iter_mut().enumerate() {
            if flow.polling && !flow.cancelled {
                flow.cancelled = true;
                let kind = if i == 0 {
                    OpKind::HttpSpliceUp
                } else {
                    OpKind::HttpSpliceDown
                };
                self.ring.cancel(UserData::new(kind, handle.0, handle.1));
            }
            if let Some(pipe) = flow.pipe.take()
                && flow.in_pipe == 0
            {
                self.pools.pipes.give_back(pipe);
            }
            flow.in_pipe = 0;
        }
    }
}
