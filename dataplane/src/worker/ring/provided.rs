//! The provided-buffer ring of one worker: the memory multishot receives fill.
//!
//! # Ownership
//!
//! Every buffer is always in exactly one of two places:
//!
//! - **the kernel's**: published in the ring (between the kernel's head and our tail). A receive may
//!   pick it at any time while we are inside `io_uring_enter`; we never read or write it.
//! - **lent to the worker**: a completion named it (`IORING_CQE_F_BUFFER`). The kernel will not touch it
//!   again until we publish it anew. The worker reads it through [`ProvidedBuffers::bytes`], which borrows
//!   the ring immutably, so no slice can outlive the next `&mut` use of the ring; and every lent buffer
//!   is published again at the start of the next submission ([`ProvidedBuffers::give_back_lent`]). A
//!   buffer is therefore lent for the rest of one loop turn at most, whatever the worker does with the
//!   completion, and the worker never has to give anything back by hand (the bytes it wants to keep it
//!   copies: HTTP sessions append them to their own buffer).
//!
//! # Sizing
//!
//! With `DEFER_TASKRUN` the kernel runs receives only while the worker is inside `io_uring_enter`, and
//! all lent buffers are back in the ring before each enter: the ring is sized for what one turn may
//! receive, not for how many connections are open. An idle connection with a multishot receive armed
//! holds no buffer at all; a buffer is taken only when bytes arrive, and returned within the turn. A
//! turn that receives more than the ring holds ends the receives that found it empty (`ENOBUFS`); the
//! worker re-arms them for the next turn, so a burst costs a turn of latency, never bytes.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// The buffer group id of the worker's provided buffers (one group per ring).
pub const BUFFER_GROUP: u16 = 0;
/// Bytes per provided buffer: one receive completion carries at most this much. 16 KiB holds a whole
/// request head of the default size limit and a whole TLS record.
pub const BUFFER_SIZE: u32 = 16 * 1024;
/// Default buffers per worker (`--recv-buffers`): 256 × 16 KiB = 4 MiB per worker, what one turn of a busy
/// worker receives (the kernel gives one multishot receive at most 32 buffers in a row).
pub const DEFAULT_BUFFERS: u16 = 256;
/// Page alignment the kernel requires of the ring memory.
const PAGE: usize = 4096;

/// A registered provided-buffer ring and the buffers it points to.
pub struct ProvidedBuffers {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    data: NonNull<u8>,
    data_layout: Layout,
    count: u16,
    /// Our tail: entries before it are published to the kernel.
    tail: u16,
    /// Buffers a completion handed to the worker this turn, published again at the next submission.
    lent: Vec<u16>,
    /// Set while buffers are lent: a bitmap check that a completion names each buffer once.
    lent_mask: Vec<u64>,
    /// Receives may still write into `data` (the ring could not confirm they all ended): never free it.
    leak: bool,
}

// SAFETY: the allocations are owned by this value alone and move with it; the kernel's view of them is tied
// to the ring that registered them, which is moved together with this value (both live in `Ring`).
unsafe impl Send for ProvidedBuffers {}

impl std::fmt::Debug for ProvidedBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedBuffers")
            .field("count", &self.count)
            .field("lent", &self.lent.len())
            .finish()
    }
}

impl ProvidedBuffers {
    /// Allocates `count` buffers (a power of two, 1..=32768) and registers them with `ring` as
    /// [`BUFFER_GROUP`].
    pub fn register(ring: &IoUring, count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 1 << 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{count} receive buffers: must be a power of two up to 32768"),
            ));
        }
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            PAGE,
        )
        .map_err(io::Error::other)?;
        let data_layout = Layout::from_size_align(usize::from(count) * BUFFER_SIZE as usize, PAGE)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count ≥ 1); a null result is handled.
        let entries = NonNull::new(unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: as above.
        let Some(data) = NonNull::new(unsafe { alloc(data_layout) }) else {
            // SAFETY: allocated just above with this layout, and not registered.
            unsafe { dealloc(entries.as_ptr().cast(), entries_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut buffers = Self {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            tail: 0,
            lent: Vec::with_capacity(usize::from(count)),
            lent_mask: vec![0; usize::from(count).div_ceil(64)],
            leak: false,
        };
        for bid in 0..count {
            buffers.publish(bid);
        }
        buffers.store_tail();
        // SAFETY: the entries are page-aligned, `count` long, and stay allocated until this value is
        // dropped, which the ring does only after the io_uring is gone (see `Ring`'s field order and
        // drop); the buffers they point to likewise.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries.as_ptr() as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        Ok(buffers)
    }

    pub fn count(&self) -> u16 {
        self.count
    }

    /// Buffers lent to the worker right now.
    pub fn lent(&self) -> usize {
        self.lent.len()
    }

    /// Writes the entry for `bid` at our tail (not yet visible to the kernel: see `store_tail`).
    fn publish(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index` < count, inside the entries allocation; the kernel reads entries only between
        // its head and the published tail, and this slot is at or past the published tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        // SAFETY: `bid` < count, so the buffer lies inside the data allocation.
        let address = unsafe {
            self.data
                .as_ptr()
                .add(usize::from(bid) * BUFFER_SIZE as usize)
        };
        entry.set_addr(address as u64);
        entry.set_len(BUFFER_SIZE);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry written so far visible to the kernel.
    fn store_tail(&self) {
        // SAFETY: the tail lives in the first entry's reserved field, inside the allocation; the kernel
        // reads it with acquire semantics, so a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Takes note that a completion lent buffer `bid` to the worker.
    pub fn lend(&mut self, bid: u16) {
        assert!(
            bid < self.count,
            "the kernel named buffer {bid} of {}",
            self.count
        );
        let (word, bit) = (usize::from(bid) / 64, 1u64 << (bid % 64));
        assert!(
            self.lent_mask[word] & bit == 0,
            "buffer {bid} lent twice without being given back"
        );
        self.lent_mask[word] |= bit;
        self.lent.push(bid);
    }

    /// The first `len` bytes of lent buffer `bid`.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= BUFFER_SIZE as usize,
            "buffer {bid}, {len} bytes"
        );
        let (word, bit) = (usize::from(bid) / 64, 1u64 << (bid % 64));
        assert!(
            self.lent_mask[word] & bit != 0,
            "buffer {bid} is not lent: the kernel may be writing it"
        );
        // SAFETY: the buffer is lent (checked above): the kernel wrote `len` bytes into it before posting
        // the completion and will not touch it until `give_back_lent` publishes it again, which needs
        // `&mut self` and so cannot happen while this borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                self.data
                    .as_ptr()
                    .add(usize::from(bid) * BUFFER_SIZE as usize),
                len,
            )
        }
    }

    /// Publishes every lent buffer again (called before each submission).
    pub fn give_back_lent(&mut self) {
        if self.lent.is_empty() {
            return;
        }
        let lent = std::mem::take(&mut self.lent);
        for &bid in &lent {
            self.lent_mask[usize::from(bid) / 64] &= !(1u64 << (bid % 64));
            self.publish(bid);
        }
        self.lent = lent;
        self.lent.clear();
        self.store_tail();
    }

    /// Receives may still write into the buffers: keep the memory for the life of the process rather
    /// than free it under the kernel.
    pub fn leak_on_drop(&mut self) {
        self.leak = true;
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated in `register` with these layouts; the ring that used them is gone and no
        // receive was left running (else `leak` is set).
        unsafe {
            dealloc(self.data.as_ptr(), self.data_layout);
            dealloc(self.entries.as_ptr().cast(), self.entries_layout);
        }
    }
}
