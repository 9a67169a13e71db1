//! Sends from owned buffers.
//!
//! # Ownership
//!
//! A send points the kernel at the bytes of [`Bytes`] values. The ring takes the values (reference-counted
//! handles: the caller usually keeps its own clones) into a [`SendArgs`] that it owns until the send's
//! completion has been read, so the memory cannot be freed or reused while the kernel may still copy from
//! it. Several buffers go out in one `SENDMSG` with an `iovec` per buffer, whose array (inline) and header
//! live in the same boxed [`SendArgs`] (a heap address that does not move while the box sits in the ring's
//! map). A completed send's box is emptied and kept for the next send ([`SendArgs::clear`]), so a steady
//! stream of sends allocates nothing: neither the box nor its list of buffers.
//!
//! Sends carry `MSG_WAITALL`, so on a stream socket io_uring keeps sending until every byte went or an
//! error stopped it (a short result means the rest did not go), and `MSG_NOSIGNAL`, so a closed peer is
//! `EPIPE` rather than a signal.

use bytes::Bytes;

/// Most buffers one send carries (well below `IOV_MAX`).
pub const MAX_SEND_BUFFERS: usize = 32;

/// Flags of every send.
pub const SEND_FLAGS: i32 = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;

/// What one send points to, alive until its completion.
pub struct SendArgs {
    buffers: Vec<Bytes>,
    /// The first `buffers.len()` entries point at the buffers.
    iov: [libc::iovec; MAX_SEND_BUFFERS],
    msg: libc::msghdr,
    len: usize,
}

// SAFETY: the raw pointers in `iov` and `msg` point into `buffers` and `iov`, which this value owns and
// which move with it; nothing else holds them.
unsafe impl Send for SendArgs {}

impl SendArgs {
    /// An empty box, filled by [`SendArgs::fill`].
    pub fn empty() -> Box<Self> {
        // SAFETY: msghdr is plain data; all-zero is an empty header, completed in `fill`.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let unused = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Box::new(Self {
            buffers: Vec::with_capacity(MAX_SEND_BUFFERS),
            iov: [unused; MAX_SEND_BUFFERS],
            msg,
            len: 0,
        })
    }

    /// Takes `buffers` (1..=[`MAX_SEND_BUFFERS`], none empty) into an empty box and points the iovecs
    /// at them and the header at the iovecs (the box's addresses are final).
    pub fn fill(&mut self, buffers: impl IntoIterator<Item = Bytes>) {
        debug_assert!(self.buffers.is_empty(), "a send box filled twice");
        self.buffers.extend(buffers);
        assert!(
            (1..=MAX_SEND_BUFFERS).contains(&self.buffers.len()),
            "{} buffers in one send",
            self.buffers.len()
        );
        self.len = self.buffers.iter().map(Bytes::len).sum();
        assert!(
            self.len > 0 && self.len <= u32::MAX as usize,
            "a send of {} bytes",
            self.len
        );
        for (iov, buffer) in self.iov.iter_mut().zip(&self.buffers) {
            *iov = libc::iovec {
                iov_base: buffer.as_ptr() as *mut libc::c_void,
                iov_len: buffer.len(),
            };
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.buffers.len();
    }

    /// Lets the buffers go (the send completed), keeping the box and its list for the next send.
    pub fn clear(&mut self) {
        self.buffers.clear();
        self.len = 0;
    }

    /// Bytes this send carries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A single buffer: its address and length (for `SEND`, which needs no header).
    pub fn single(&self) -> Option<(*const u8, u32)> {
        match &self.buffers[..] {
            [only] => Some((only.as_ptr(), only.len() as u32)),
            _ => None,
        }
    }

    /// The header for `SENDMSG`.
    pub fn header(&self) -> *const libc::msghdr {
        &self.msg
    }
}
