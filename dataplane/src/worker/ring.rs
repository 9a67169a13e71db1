//! One worker's io_uring: submission helpers, completion decoding and the memory that ops point to.
//!
//! This is one of the two modules with `unsafe` (the other is `sys`). The contract of `SubmissionQueue::push`
//! is that everything an SQE points to stays valid until the kernel is done with it. Only `connect` points
//! at memory (a socket address and a timeout); the ring owns both in [`ConnectArgs`] and frees them only
//! after *both* the connect CQE and its linked-timeout CQE have arrived, so no caller can get it wrong.
//! All other ops here carry descriptors and integers only.
//!
//! The descriptor a successful accept completion returns is wrapped in an [`OwnedFd`] here, as its completion
//! is read, and the worker takes it with [`Ring::take_accepted`]: the raw number never becomes a descriptor
//! anywhere else, so no safe code can forge or double an owner.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use socket2::SockAddr;

/// What an operation is for. Stored in the top byte of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpKind {
    /// Multishot accept on a listener; `index` is the worker's listener slot.
    Accept = 1,
    /// Multishot poll on the worker's wake-up eventfd.
    Wake = 2,
    Connect = 3,
    ConnectTimeout = 4,
    /// Readiness poll of the client→server flow (client readable or server writable).
    PollUp = 5,
    /// Readiness poll of the server→client flow.
    PollDown = 6,
    /// `IORING_OP_SPLICE` from a socket into the flow's pipe (`uring-splice` mode).
    SpliceInUp = 7,
    SpliceOutUp = 8,
    SpliceInDown = 9,
    SpliceOutDown = 10,
    /// An `ASYNC_CANCEL` request; its own completion carries nothing we need.
    Cancel = 11,
}

impl OpKind {
    fn from_u8(value: u8) -> Option<Self> {
        use OpKind::*;
        Some(match value {
            1 => Accept,
            2 => Wake,
            3 => Connect,
            4 => ConnectTimeout,
            5 => PollUp,
            6 => PollDown,
            7 => SpliceInUp,
            8 => SpliceOutUp,
            9 => SpliceInDown,
            10 => SpliceOutDown,
            11 => Cancel,
            _ => return None,
        })
    }

    /// Bit of this op in a connection's pending-op mask.
    pub const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// `user_data` of an op: kind (8 bits) | generation (24 bits) | slot index (32 bits).
///
/// The generation makes a completion that arrives after its slot was reused harmless: it no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserData {
    pub kind: OpKind,
    pub generation: u32,
    pub index: u32,
}

impl UserData {
    pub fn new(kind: OpKind, index: u32, generation: u32) -> Self {
        Self {
            kind,
            generation: generation & GEN_MASK,
            index,
        }
    }

    pub fn encode(self) -> u64 {
        ((self.kind as u64) << 56)
            | (((self.generation & GEN_MASK) as u64) << 32)
            | self.index as u64
    }

    pub fn decode(raw: u64) -> Option<Self> {
        Some(Self {
            kind: OpKind::from_u8((raw >> 56) as u8)?,
            generation: ((raw >> 32) as u32) & GEN_MASK,
            index: raw as u32,
        })
    }

    /// The same slot and generation with another kind.
    pub fn with_kind(self, kind: OpKind) -> Self {
        Self { kind, ..self }
    }
}

/// Generations wrap at 24 bits.
pub fn next_generation(generation: u32) -> u32 {
    generation.wrapping_add(1) & GEN_MASK
}

/// One decoded completion.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub op: UserData,
    /// The syscall-style result: a value, or `-errno`.
    pub result: i32,
    /// A multishot op will produce more completions.
    pub more: bool,
}

/// Memory a connect and its linked timeout point to, alive until both have completed.
struct ConnectArgs {
    address: SockAddr,
    timeout: types::Timespec,
    /// Completions still to come (connect and timeout).
    outstanding: u8,
}

/// Ring sizes and the io-wq policy, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    pub entries: u32,
    /// Caps io-wq (bounded, unbounded) workers and pins them to the worker's core; `None` leaves the
    /// kernel defaults. Only `uring-splice` forwards through io-wq.
    pub iowq_max_workers: Option<u32>,
}

/// A worker's ring plus the op memory it owns.
pub struct Ring {
    ring: IoUring,
    connect_args: HashMap<u64, Box<ConnectArgs>>,
    /// Sockets returned by accept completions that were read but not yet taken, by descriptor number.
    accepted: HashMap<RawFd, OwnedFd>,
}

impl Ring {
    /// A single-issuer ring with deferred task running: completions are processed only when this thread
    /// enters the kernel, which keeps all the work on the pinned core.
    pub fn new(config: RingConfig, core: Option<usize>) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(config.entries.saturating_mul(4))
            .build(config.entries)?;
        if let Some(max) = config.iowq_max_workers {
            ring.submitter()
                .register_iowq_max_workers(&mut [max, max])?;
            if let Some(core) = core {
                ring.submitter()
                    .register_iowq_aff(&crate::sys::cpu_set_of(core))?;
            }
        }
        Ok(Self {
            ring,
            connect_args: HashMap::new(),
            accepted: HashMap::new(),
        })
    }

    /// Queues an entry, submitting first if the queue is full; never drops an entry.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this module points only to memory owned by `self` (connect
            // arguments) or to nothing at all; see the module documentation.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::warn!(error = %e, "io_uring submit failed while the submission queue was full");
            }
        }
    }

    pub fn accept_multi(&mut self, listener: RawFd, op: UserData) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(op.encode());
        self.push(entry);
    }

    /// One-shot readiness poll (`POLLIN` or `POLLOUT`).
    pub fn poll(&mut self, fd: RawFd, events: i16, op: UserData) {
        let entry = opcode::PollAdd::new(types::Fd(fd), events as u32)
            .build()
            .user_data(op.encode());
        self.push(entry);
    }

    /// Multishot readiness poll, for the wake-up eventfd.
    pub fn poll_multi(&mut self, fd: RawFd, events: i16, op: UserData) {
        let entry = opcode::PollAdd::new(types::Fd(fd), events as u32)
            .multi(true)
            .build()
            .user_data(op.encode());
        self.push(entry);
    }

    /// Connects `fd` to `address`, cancelled after `timeout` (the connect then completes with `-ECANCELED`).
    pub fn connect(&mut self, fd: RawFd, address: &SockAddr, timeout: Duration, op: UserData) {
        let connect_ud = op.with_kind(OpKind::Connect).encode();
        let args = Box::new(ConnectArgs {
            address: address.clone(),
            timeout: types::Timespec::from(timeout),
            outstanding: 2,
        });
        let connect = opcode::Connect::new(
            types::Fd(fd),
            args.address.as_ptr().cast(),
            args.address.len(),
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(connect_ud);
        let timeout = opcode::LinkTimeout::new(&args.timeout as *const types::Timespec)
            .build()
            .user_data(op.with_kind(OpKind::ConnectTimeout).encode());
        // The Box's heap address is stable while it sits in the map, so the pointers above stay valid.
        let previous = self.connect_args.insert(connect_ud, args);
        debug_assert!(
            previous.is_none(),
            "two connects in flight with the same user_data"
        );
        // A link must not be split by a full queue: make room for both entries first.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 {
            let _ = self.ring.submit();
        }
        self.push(connect);
        self.push(timeout);
    }

    /// `IORING_OP_SPLICE` of up to `len` bytes between a socket and a pipe.
    pub fn splice(&mut self, from: RawFd, to: RawFd, len: u32, op: UserData) {
        let entry = opcode::Splice::new(types::Fd(from), -1, types::Fd(to), -1, len)
            .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
            .build()
            .user_data(op.encode());
        self.push(entry);
    }

    /// Asks the kernel to cancel the op identified by `target`; the target then completes (usually with
    /// `-ECANCELED`) and the cancel itself completes as an [`OpKind::Cancel`].
    pub fn cancel(&mut self, target: UserData) {
        let entry = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
        self.push(entry);
    }

    /// Submits what is queued and waits for at least one completion or until `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Moves every available completion into `out`, releasing op memory whose ops are finished.
    pub fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        let mut completion = self.ring.completion();
        completion.sync();
        for cqe in &mut completion {
            let raw = cqe.user_data();
            let Some(op) = UserData::decode(raw) else {
                debug_assert!(false, "completion with unknown user_data {raw:#x}");
                continue;
            };
            let more = cqueue::more(cqe.flags());
            if matches!(op.kind, OpKind::Connect | OpKind::ConnectTimeout) {
                let key = op.with_kind(OpKind::Connect).encode();
                if let Some(args) = self.connect_args.get_mut(&key) {
                    args.outstanding -= 1;
                    if args.outstanding == 0 {
                        self.connect_args.remove(&key);
                    }
                }
            }
            let result = cqe.result();
            if op.kind == OpKind::Accept && result >= 0 {
                // SAFETY: a successful accept completion's result is a new descriptor that nothing else
                // owns, and each completion is read once: this is its only owner.
                let socket = unsafe { OwnedFd::from_raw_fd(result) };
                let previous = self.accepted.insert(result, socket);
                debug_assert!(previous.is_none(), "descriptor {result} accepted twice");
            }
            out.push(Completion { op, result, more });
        }
    }

    /// Takes ownership of the socket a successful accept completion returned (`result`, as
    /// [`Ring::drain_completions`] reported it). `None` if the ring holds no such socket: it was taken
    /// already. A socket never taken is closed with the ring.
    pub fn take_accepted(&mut self, result: i32) -> Option<OwnedFd> {
        self.accepted.remove(&result)
    }

    /// Connects whose memory the ring still holds (tests and debug assertions).
    pub fn connects_in_flight(&self) -> usize {
        self.connect_args.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener};
    use std::os::fd::AsRawFd;

    fn ring() -> Ring {
        Ring::new(
            RingConfig {
                entries: 64,
                iowq_max_workers: None,
            },
            None,
        )
        .expect("io_uring available")
    }

    fn wait_for(ring: &mut Ring, kinds: &[OpKind]) -> Vec<Completion> {
        let mut all = Vec::new();
        for _ in 0..200 {
            ring.submit_and_wait(Some(Duration::from_millis(20)))
                .unwrap();
            ring.drain_completions(&mut all);
            if kinds.iter().all(|k| all.iter().any(|c| c.op.kind == *k)) {
                return all;
            }
        }
        panic!("completions {kinds:?} did not arrive; got {all:?}");
    }

    #[test]
    fn user_data_round_trips_and_wraps_generation() {
        let op = UserData::new(OpKind::SpliceOutDown, u32::MAX, 0x00ab_cdef);
        assert_eq!(UserData::decode(op.encode()), Some(op));
        assert_eq!(next_generation(GEN_MASK), 0);
        assert_eq!(UserData::decode(0), None);
    }

    #[test]
    fn connect_memory_lives_until_both_completions() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target: SocketAddr = listener.local_addr().unwrap();
        let mut ring = ring();
        let fd = crate::sys::tcp_socket_for(&target).unwrap();
        let op = UserData::new(OpKind::Connect, 7, 1);
        ring.connect(
            fd.as_raw_fd(),
            &SockAddr::from(target),
            Duration::from_secs(5),
            op,
        );
        assert_eq!(ring.connects_in_flight(), 1);
        let done = wait_for(&mut ring, &[OpKind::Connect, OpKind::ConnectTimeout]);
        let connect = done.iter().find(|c| c.op.kind == OpKind::Connect).unwrap();
        assert_eq!(connect.result, 0, "connect to a listening socket succeeds");
        assert_eq!(connect.op.index, 7);
        let timeout = done
            .iter()
            .find(|c| c.op.kind == OpKind::ConnectTimeout)
            .unwrap();
        assert_eq!(
            timeout.result,
            -libc::ECANCELED,
            "the timer is cancelled by the finished connect"
        );
        assert_eq!(ring.connects_in_flight(), 0);
    }

    #[test]
    fn an_accepted_socket_is_owned_by_the_ring_until_taken_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = ring();
        ring.accept_multi(listener.as_raw_fd(), UserData::new(OpKind::Accept, 0, 0));
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let done = wait_for(&mut ring, &[OpKind::Accept]);
        let accept = done.iter().find(|c| c.op.kind == OpKind::Accept).unwrap();
        assert!(accept.result >= 0, "accept failed: {}", accept.result);
        let socket = ring.take_accepted(accept.result).expect("held by the ring");
        assert!(ring.take_accepted(accept.result).is_none(), "one owner");
        let server = std::net::TcpStream::from(socket);
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    }

    /// A loopback address whose connects hang: a listener that never accepts, its queue already full, so
    /// the kernel drops further SYNs.
    fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let address = listener.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            let _ = socket.connect(&address.into());
            fillers.push(std::net::TcpStream::from(socket));
        }
        std::thread::sleep(Duration::from_millis(50));
        (listener, fillers, address)
    }

    #[test]
    fn connect_timeout_cancels_the_connect_and_frees_memory() {
        let (_listener, _fillers, target) = black_hole();
        let mut ring = ring();
        let fd = crate::sys::tcp_socket_for(&target).unwrap();
        let op = UserData::new(OpKind::Connect, 1, 1);
        ring.connect(
            fd.as_raw_fd(),
            &SockAddr::from(target),
            Duration::from_millis(30),
            op,
        );
        let done = wait_for(&mut ring, &[OpKind::Connect, OpKind::ConnectTimeout]);
        let connect = done.iter().find(|c| c.op.kind == OpKind::Connect).unwrap();
        assert_eq!(
            connect.result,
            -libc::ECANCELED,
            "the linked timeout cancels a hanging connect"
        );
        let timeout = done
            .iter()
            .find(|c| c.op.kind == OpKind::ConnectTimeout)
            .unwrap();
        assert_eq!(timeout.result, -libc::ETIME);
        assert_eq!(ring.connects_in_flight(), 0);
    }

    #[test]
    fn cancelled_poll_completes_before_its_descriptor_may_be_reused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ring = ring();
        let op = UserData::new(OpKind::PollUp, 3, 9);
        ring.poll(a.as_raw_fd(), libc::POLLIN, op);
        ring.submit().unwrap();
        ring.cancel(op);
        let done = wait_for(&mut ring, &[OpKind::PollUp, OpKind::Cancel]);
        let poll = done.iter().find(|c| c.op.kind == OpKind::PollUp).unwrap();
        assert_eq!(poll.result, -libc::ECANCELED);
        assert_eq!(poll.op, op);
    }

    #[test]
    fn full_submission_queue_never_drops_entries() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ring = ring();
        // Four times the queue size: pushes must submit in between rather than fail.
        let total = 256u32;
        for i in 0..total {
            ring.poll(
                a.as_raw_fd(),
                libc::POLLOUT,
                UserData::new(OpKind::PollDown, i, 0),
            );
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            ring.submit_and_wait(Some(Duration::from_millis(20)))
                .unwrap();
            ring.drain_completions(&mut got);
            if got.len() == total as usize {
                break;
            }
        }
        assert_eq!(got.len(), total as usize);
        assert!(got.iter().all(|c| c.result & libc::POLLOUT as i32 != 0));
    }
}
