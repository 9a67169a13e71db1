//! One worker's io_uring: submission helpers, completion decoding and the memory that ops point to.
//!
//! This is one of the two modules with `unsafe` (the other is `sys`). The contract of `SubmissionQueue::push`
//! is that everything an SQE points to stays valid until the kernel is done with it. Three kinds of ops
//! point at memory, and the ring owns that memory in each case, so no caller can get it wrong:
//!
//! - `connect` (a socket address and a timeout): owned in [`ConnectArgs`], freed only after *both* the
//!   connect CQE and its linked-timeout CQE have arrived.
//! - multishot receives write into the provided-buffer ring ([`provided`]): a buffer is the kernel's
//!   until a completion lends it to the worker, and lent buffers go back at the next submission.
//! - sends read from [`Bytes`] the ring holds in a [`send::SendArgs`] until the send's completion.
//!
//! All other ops carry descriptors and integers only. When the ring is dropped with receives, sends or
//! connects still in flight (a worker cut short), it cancels them and waits for their completions; memory
//! whose ops did not confirm their end is leaked rather than freed under the kernel.
//!
//! The descriptor a successful accept completion returns is wrapped in an [`OwnedFd`] here, as its completion
//! is read, and the worker takes it with [`Ring::take_accepted`]: the raw number never becomes a descriptor
//! anywhere else, so no safe code can forge or double an owner.

pub mod provided;
pub mod send;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::Bytes;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use socket2::SockAddr;

use provided::ProvidedBuffers;
use send::SendArgs;

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
    /// Watches a queued or connecting client for leaving (`POLLRDHUP`, errors).
    ClientWatch = 12,
    /// Multishot receive on a client session's socket into the provided buffers.
    ClientRecv = 13,
    /// A send to a client session's socket.
    ClientSend = 14,
    /// Connect of a backend connection (`index` names the worker's backend-connection slab).
    BackendConnect = 15,
    BackendConnectTimeout = 16,
    /// Multishot receive on a backend connection's socket.
    BackendRecv = 17,
    /// A send to a backend connection's socket.
    BackendSend = 18,
    /// Readiness poll of an HTTP session's body spliced from client to backend (`index` names the
    /// session).
    HttpSpliceUp = 19,
    /// Readiness poll of an HTTP session's body spliced from backend to client.
    HttpSpliceDown = 20,
}

/// Which of the worker's objects an op's `index` and `generation` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The worker itself (wake-ups, cancels).
    Worker,
    /// A listener slot.
    Listener,
    /// A client session (the session slab).
    Session,
    /// A backend connection (the backend-connection slab).
    Backend,
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
            12 => ClientWatch,
            13 => ClientRecv,
            14 => ClientSend,
            15 => BackendConnect,
            16 => BackendConnectTimeout,
            17 => BackendRecv,
            18 => BackendSend,
            19 => HttpSpliceUp,
            20 => HttpSpliceDown,
            _ => return None,
        })
    }

    /// Bit of this op in an object's pending-op mask.
    pub const fn bit(self) -> u32 {
        1 << (self as u8)
    }

    /// The object this op belongs to.
    pub const fn target(self) -> Target {
        use OpKind::*;
        match self {
            Wake | Cancel => Target::Worker,
            Accept => Target::Listener,
            BackendConnect | BackendConnectTimeout | BackendRecv | BackendSend => Target::Backend,
            Connect | ConnectTimeout | PollUp | PollDown | SpliceInUp | SpliceOutUp
            | SpliceInDown | SpliceOutDown | ClientWatch | ClientRecv | ClientSend
            | HttpSpliceUp | HttpSpliceDown => Target::Session,
        }
    }

    /// A multishot receive into provided buffers.
    const fn is_recv(self) -> bool {
        matches!(self, OpKind::ClientRecv | OpKind::BackendRecv)
    }

    /// The connect op of a connect or its linked timeout (the key of the connect's memory).
    const fn connect_of(self) -> Option<OpKind> {
        match self {
            OpKind::Connect | OpKind::ConnectTimeout => Some(OpKind::Connect),
            OpKind::BackendConnect | OpKind::BackendConnectTimeout => Some(OpKind::BackendConnect),
            _ => None,
        }
    }

    /// The linked timeout of a connect op.
    const fn timeout_of(self) -> OpKind {
        match self {
            OpKind::BackendConnect => OpKind::BackendConnectTimeout,
            _ => OpKind::ConnectTimeout,
        }
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

/// Completion queue size for `entries` submission entries: four times as many, within the kernel's
/// maximum (a larger request makes ring setup fail with EINVAL).
pub fn cq_entries(entries: u32) -> u32 {
    entries.saturating_mul(CQ_PER_SQ).min(MAX_CQ_ENTRIES)
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
    /// The provided buffer a receive filled (`result` bytes of it), lent to the worker until the next
    /// submission: read it with [`Ring::received`].
    pub buffer: Option<u16>,
}

/// Hashes the keys of the ring's maps: `user_data` values and descriptor numbers, unique integers that
/// the worker or the kernel chose, never a client. One multiplication spreads them (the slot index in
/// the low bits picks the bucket); SipHash's resistance to chosen keys would buy nothing and cost a
/// keyed hash on every send, connect and accept and on each of their completions.
#[derive(Debug, Default, Clone, Copy)]
struct IntegerHasher(u64);

impl Hasher for IntegerHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // 2^64 / φ, odd: a bijection that carries every input bit into the high bits.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u64(u64::from(n as u32));
    }
}

/// A map keyed by an integer the ring chose (see [`IntegerHasher`]).
type IntegerMap<K, V> = HashMap<K, V, BuildHasherDefault<IntegerHasher>>;

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
    /// Provided buffers for receives (a power of two; see [`provided`] for the sizing).
    pub recv_buffers: u16,
    /// Caps io-wq (bounded, unbounded) workers and pins them to the worker's core; `None` leaves the
    /// kernel defaults. Only `uring-splice` forwards through io-wq.
    pub iowq_max_workers: Option<u32>,
}

/// The kernel's largest completion queue (`IORING_MAX_CQ_ENTRIES`).
pub const MAX_CQ_ENTRIES: u32 = 65_536;
/// Completion queue entries per submission queue entry: room for the completions of multishot ops.
const CQ_PER_SQ: u32 = 4;
/// How often `push` submits to make room in a full submission queue before the entry waits in the
/// overflow instead (the kernel refusing submissions must not make the worker spin).
const SUBMIT_ATTEMPTS: usize = 3;

/// Emptied send boxes a ring keeps for reuse: enough for the sends of a busy turn, while a burst's
/// extra boxes are freed.
const SPARE_SENDS: usize = 256;

/// How long a ring being dropped waits for its cancelled ops before it leaks their memory instead.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// A worker's ring plus the op memory it owns. `ring` is declared first so that it is dropped before the
/// memory its ops point to.
pub struct Ring {
    ring: IoUring,
    connect_args: IntegerMap<u64, Box<ConnectArgs>>,
    /// Sends in flight and the buffers they read from, by `user_data`.
    sends: IntegerMap<u64, Box<SendArgs>>,
    /// Emptied boxes of completed sends, reused by the next sends (at most [`SPARE_SENDS`]). Boxed, not
    /// inline: a send's header points into its own box, which must not move once handed to the kernel.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendArgs>>,
    buffers: ProvidedBuffers,
    /// Multishot receives submitted whose final completion (without `MORE`) has not been read.
    armed_recvs: usize,
    /// Sockets returned by accept completions that were read but not yet taken, by descriptor number.
    accepted: IntegerMap<RawFd, OwnedFd>,
    /// Entries that found the submission queue full while the kernel refused to take it: each group
    /// (an entry, or a connect with its linked timeout) goes into the queue whole, in order, before any
    /// newer entry. Empty in normal operation.
    overflow: VecDeque<Vec<squeue::Entry>>,
    /// A submission failed and nothing has been submitted since: logged once per episode.
    submit_failing: bool,
}

impl Ring {
    /// A single-issuer ring with deferred task running: completions are processed only when this thread
    /// enters the kernel, which keeps all the work on the pinned core.
    pub fn new(config: RingConfig, core: Option<usize>) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(cq_entries(config.entries))
            .build(config.entries)?;
        if let Some(max) = config.iowq_max_workers {
            ring.submitter()
                .register_iowq_max_workers(&mut [max, max])?;
            if let Some(core) = core {
                ring.submitter()
                    .register_iowq_aff(&crate::sys::cpu_set_of(core))?;
            }
        }
        let buffers = ProvidedBuffers::register(&ring, config.recv_buffers)?;
        Ok(Self {
            ring,
            connect_args: IntegerMap::default(),
            sends: IntegerMap::default(),
            spare_sends: Vec::new(),
            buffers,
            armed_recvs: 0,
            accepted: IntegerMap::default(),
            overflow: VecDeque::new(),
            submit_failing: false,
        })
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.push_group(&[entry]);
    }

    /// Queues `entries` together (a link must not be split across submissions); never drops one. A full
    /// submission queue is submitted to make room, at most [`SUBMIT_ATTEMPTS`] times; if the kernel keeps
    /// refusing, the entries wait in the overflow and go in first at the next [`Ring::submit_and_wait`],
    /// which reports a lasting failure to the worker instead of spinning here.
    fn push_group(&mut self, entries: &[squeue::Entry]) {
        for attempt in 0..=SUBMIT_ATTEMPTS {
            if self.overflow.is_empty() {
                // SAFETY: every entry built in this module points only to memory owned by `self`
                // (connect arguments) or to nothing at all; see the module documentation.
                // `push_multiple` pushes all of them or none.
                if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                    return;
                }
            }
            if attempt < SUBMIT_ATTEMPTS && self.submit_for_room().is_ok() {
                self.move_overflow();
            }
        }
        self.overflow.push_back(entries.to_vec());
    }

    fn room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    fn submit_for_room(&mut self) -> io::Result<usize> {
        match self.ring.submit() {
            Ok(n) => {
                if self.submit_failing {
                    self.submit_failing = false;
                    tracing::info!("io_uring submissions accepted again");
                }
                Ok(n)
            }
            Err(e) => {
                if !self.submit_failing {
                    self.submit_failing = true;
                    tracing::warn!(
                        error = %e,
                        "io_uring refused a submission while the submission queue was full; \
                         entries wait until it accepts again"
                    );
                }
                Err(e)
            }
        }
    }

    /// Moves whole overflow groups into the submission queue while they fit.
    fn move_overflow(&mut self) {
        while let Some(len) = self.overflow.front().map(Vec::len) {
            if self.room() < len {
                return;
            }
            let group = self.overflow.front().expect("checked above");
            // SAFETY: as in `push_group`; the entries' memory is still owned by `self`.
            let pushed = unsafe { self.ring.submission().push_multiple(group) };
            debug_assert!(pushed.is_ok(), "room was checked");
            self.overflow.pop_front();
        }
    }

    /// Submits until the overflow is empty; fails if the kernel refuses a submission.
    fn flush_overflow(&mut self) -> io::Result<()> {
        while !self.overflow.is_empty() {
            self.move_overflow();
            if !self.overflow.is_empty() {
                self.submit_for_room()?;
            }
        }
        Ok(())
    }

    /// Entries waiting for room in the submission queue (tests and debug assertions).
    pub fn overflowing(&self) -> usize {
        self.overflow.iter().map(Vec::len).sum()
    }

    /// One accept (near the connection cap, where a multishot accept could take a whole queue at once).
    pub fn accept(&mut self, listener: RawFd, op: UserData) {
        let entry = opcode::Accept::new(
            types::Fd(listener),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        .build()
        .user_data(op.encode());
        self.push(entry);
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
    /// `op` is a connect kind ([`OpKind::Connect`] or [`OpKind::BackendConnect`]); its linked timeout
    /// completes under the matching timeout kind.
    pub fn connect(&mut self, fd: RawFd, address: &SockAddr, timeout: Duration, op: UserData) {
        let kind = op.kind.connect_of().expect("a connect op");
        let connect_ud = op.with_kind(kind).encode();
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
            .user_data(op.with_kind(kind.timeout_of()).encode());
        // The Box's heap address is stable while it sits in the map, so the pointers above stay valid.
        let previous = self.connect_args.insert(connect_ud, args);
        debug_assert!(
            previous.is_none(),
            "two connects in flight with the same user_data"
        );
        self.push_group(&[connect, timeout]);
    }

    /// `IORING_OP_SPLICE` of up to `len` bytes between a socket and a pipe.
    pub fn splice(&mut self, from: RawFd, to: RawFd, len: u32, op: UserData) {
        let entry = opcode::Splice::new(types::Fd(from), -1, types::Fd(to), -1, len)
            .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
            .build()
            .user_data(op.encode());
        self.push(entry);
    }

    /// A multishot receive on `fd` into the provided buffers. Each completion lends one buffer
    /// ([`Completion::buffer`]); `0` is end of file, `-ENOBUFS` means the buffers ran out this turn (the
    /// receive ended: arm it again next turn). Every path ends with a completion without `more`.
    pub fn recv_multi(&mut self, fd: RawFd, op: UserData) {
        debug_assert!(op.kind.is_recv(), "{:?} is not a receive", op.kind);
        let entry = opcode::RecvMulti::new(types::Fd(fd), provided::BUFFER_GROUP)
            .build()
            .user_data(op.encode());
        self.armed_recvs += 1;
        self.push(entry);
    }

    /// Sends `buffers`, in order, on `fd` (one op; 1 to [`send::MAX_SEND_BUFFERS`], none empty) and
    /// returns their length. The ring keeps them until the completion, whose result is the bytes sent
    /// (all of them unless an error stopped it) or `-errno`. At most one send per `op` may be in flight.
    pub fn send(
        &mut self,
        fd: RawFd,
        buffers: impl IntoIterator<Item = Bytes>,
        op: UserData,
    ) -> usize {
        let mut args = self.spare_sends.pop().unwrap_or_else(SendArgs::empty);
        args.fill(buffers);
        let len = args.len();
        let entry = match args.single() {
            Some((ptr, len)) => opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(send::SEND_FLAGS)
                .build(),
            None => opcode::SendMsg::new(types::Fd(fd), args.header())
                .flags(send::SEND_FLAGS as u32)
                .build(),
        }
        .user_data(op.encode());
        // The Box's heap address is stable while it sits in the map, so the pointers above stay valid.
        let previous = self.sends.insert(op.encode(), args);
        assert!(previous.is_none(), "two sends in flight for {op:?}");
        self.push(entry);
        len
    }

    /// The bytes a receive completion delivered, in its lent buffer (empty when it carried none).
    pub fn received(&self, completion: &Completion) -> &[u8] {
        match completion.buffer {
            Some(bid) if completion.result > 0 => {
                self.buffers.bytes(bid, completion.result as usize)
            }
            _ => &[],
        }
    }

    /// Asks the kernel to cancel the op identified by `target`; the target then completes (usually with
    /// `-ECANCELED`) and the cancel itself completes as an [`OpKind::Cancel`].
    pub fn cancel(&mut self, target: UserData) {
        let entry = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
        self.push(entry);
    }

    /// Submits what is queued and waits for at least one completion or until `timeout`. Buffers lent by
    /// earlier completions go back to the kernel first.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.buffers.give_back_lent();
        self.flush_overflow()?;
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

    /// Submits what is queued without waiting (lent buffers go back first).
    pub fn submit(&mut self) -> io::Result<()> {
        self.buffers.give_back_lent();
        self.flush_overflow()?;
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
            let flags = cqe.flags();
            let more = cqueue::more(flags);
            if let Some(kind) = op.kind.connect_of() {
                let key = op.with_kind(kind).encode();
                if let Some(args) = self.connect_args.get_mut(&key) {
                    args.outstanding -= 1;
                    if args.outstanding == 0 {
                        self.connect_args.remove(&key);
                    }
                }
            }
            if matches!(op.kind, OpKind::ClientSend | OpKind::BackendSend) {
                let sent = self.sends.remove(&raw);
                debug_assert!(sent.is_some(), "send completion without its buffers");
                if let Some(mut args) = sent
                    && self.spare_sends.len() < SPARE_SENDS
                {
                    args.clear();
                    self.spare_sends.push(args);
                }
            }
            let mut buffer = None;
            if op.kind.is_recv() {
                if !more {
                    self.armed_recvs -= 1;
                }
                buffer = cqueue::buffer_select(flags);
                if let Some(bid) = buffer {
                    self.buffers.lend(bid);
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
            out.push(Completion {
                op,
                result,
                more,
                buffer,
            });
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

    /// Sends whose buffers the ring still holds (tests and debug assertions).
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len()
    }

    /// Multishot receives still armed (tests and debug assertions).
    pub fn recvs_armed(&self) -> usize {
        self.armed_recvs
    }

    /// Provided buffers lent to the worker now (tests).
    pub fn buffers_lent(&self) -> usize {
        self.buffers.lent()
    }

    /// Ops that point at memory the ring owns.
    fn memory_ops(&self) -> usize {
        self.armed_recvs + self.sends.len() + self.connect_args.len()
    }
}

impl Drop for Ring {
    /// Normally nothing is in flight (a worker exits once every connection is closed). A worker cut short
    /// cancels what is left and waits for the completions; memory of ops that did not end in time is
    /// leaked, never freed while the kernel may still use it.
    fn drop(&mut self) {
        if self.memory_ops() == 0 {
            return;
        }
        let _ = self.ring.submit();
        let _ = self.ring.submitter().register_sync_cancel(
            Some(types::Timespec::from(DROP_WAIT)),
            types::CancelBuilder::any(),
        );
        let deadline = std::time::Instant::now() + DROP_WAIT;
        let mut completions = Vec::new();
        while self.memory_ops() > 0 && std::time::Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args)
                && !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                )
            {
                break;
            }
            completions.clear();
            self.drain_completions(&mut completions);
        }
        if self.memory_ops() > 0 {
            tracing::warn!(
                receives = self.armed_recvs,
                sends = self.sends.len(),
                connects = self.connect_args.len(),
                "io_uring ops still in flight at exit: their memory is kept, not freed"
            );
            self.buffers.leak_on_drop();
            for (_, args) in self.sends.drain() {
                std::mem::forget(args);
            }
            for (_, args) in self.connect_args.drain() {
                std::mem::forget(args);
            }
        }
    }
}

#[cfg(test)]
mod tests;
