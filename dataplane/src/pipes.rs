//! Per-worker pools of the intermediate storage a flow needs while bytes are in transit: kernel pipes for
//! the splice modes, user-space buffers for the copy mode.
//!
//! A flow holds a pipe or buffer only while it has bytes in flight and gives it back as soon as it is empty,
//! like HAProxy's `maxpipes`: an idle connection costs two sockets and no pipe.
//!
//! Pipes are bounded process-wide by a [`PipeBudget`]: two descriptors each (the descriptor plan gives
//! pipes their share, see `limits`), and, for an unprivileged dataplane, pipe memory charged to its user
//! (`fs.pipe-user-pages-soft`; past it the kernel gives new pipes 2 pages and refuses to grow them). A
//! flow that finds no pipe copies through a buffer instead: it never fails for want of a pipe. Each pipe's
//! real capacity is read back from the kernel, and a pipe smaller than asked for is never pooled.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::sys;

/// Pipes kept for reuse per worker beyond those in use (fewer when the budget is small).
pub const MAX_IDLE_PIPES: usize = 256;
/// Buffers kept for reuse per worker beyond those in use.
pub const MAX_IDLE_BUFFERS: usize = 256;
/// Size of a page, the unit of the kernel's pipe accounting.
const PAGE: usize = 4096;

/// How many pipes the whole process may hold, and how large they are; shared by every worker.
#[derive(Debug)]
pub struct PipeBudget {
    live: AtomicU32,
    limit: u32,
    /// Size asked for each pipe (`--pipe-size`).
    pipe_size: usize,
    /// Idle pipes one worker keeps: at most half the budget sits idle across workers.
    idle_per_worker: usize,
    /// No pipe could be had (budget spent, or the kernel refused one): logged once per episode.
    starved: AtomicBool,
    /// The kernel gave pipes smaller than asked for: logged once per episode.
    shrunk: AtomicBool,
}

impl PipeBudget {
    pub fn new(limit: u32, pipe_size: usize, workers: usize) -> Self {
        let idle_per_worker = (limit as usize / (2 * workers.max(1))).min(MAX_IDLE_PIPES);
        Self {
            live: AtomicU32::new(0),
            limit,
            pipe_size,
            idle_per_worker,
            starved: AtomicBool::new(false),
            shrunk: AtomicBool::new(false),
        }
    }

    /// Pipes open now (in use and idle), all workers together.
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn pipe_size(&self) -> usize {
        self.pipe_size
    }

    fn try_take(&self) -> bool {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        let before = self.live.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "pipe budget released more often than taken");
        if self.starved.load(Ordering::Relaxed)
            && before <= self.limit - self.limit / 8
            && self.starved.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                live = before - 1,
                limit = self.limit,
                "pipes available again"
            );
        }
    }

    fn starve(&self, cause: &dyn std::fmt::Display) {
        if !self.starved.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                live = self.live(),
                limit = self.limit,
                cause = %cause,
                "no splice pipe available: flows copy through buffers until pipes free up"
            );
        }
    }

    fn note_capacity(&self, capacity: usize) {
        if capacity < self.pipe_size {
            if !self.shrunk.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    asked = self.pipe_size,
                    got = capacity,
                    "the kernel gives smaller pipes than --pipe-size: this user's pipe memory \
                     (fs.pipe-user-pages-soft) is spent; such pipes are used but not pooled"
                );
            }
        } else if self.shrunk.load(Ordering::Relaxed) && self.shrunk.swap(false, Ordering::AcqRel) {
            tracing::info!(size = capacity, "the kernel gives full-size pipes again");
        }
    }
}

/// Full-size pipes that fit in `soft_pages` pages (`fs.pipe-user-pages-soft`; 0 means no limit).
pub fn pipes_within_user_pages(soft_pages: u64, pipe_size: usize) -> Option<u32> {
    if soft_pages == 0 {
        return None;
    }
    let pages_per_pipe = pipe_size.div_ceil(PAGE).next_power_of_two().max(1) as u64;
    Some((soft_pages / pages_per_pipe).min(u64::from(u32::MAX)) as u32)
}

/// Whether the kernel exempts this process from the per-user pipe limits: CAP_SYS_RESOURCE or
/// CAP_SYS_ADMIN in its effective set, from the `CapEff:` line of `/proc/self/status`.
pub fn exempt_from_pipe_limits(proc_status: &str) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & ((1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_RESOURCE)) != 0)
}

/// A pipe whose both ends we own, counted in its budget until closed. Empty whenever it is in the pool.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    budget: Arc<PipeBudget>,
}

impl Pipe {
    /// A new pipe sized as the budget asks (or as large as the kernel allows); its budget place is taken.
    fn create(budget: &Arc<PipeBudget>) -> io::Result<Self> {
        let (read, write) = sys::pipe()?;
        // The kernel may refuse the size (fs.pipe-max-size, per-user limits) or have shrunk the pipe at
        // creation already: what it holds is what F_GETPIPE_SZ says, whatever was asked.
        let capacity = match sys::set_pipe_size(write.as_fd(), budget.pipe_size) {
            Ok(granted) => granted,
            Err(_) => sys::pipe_size(write.as_fd())?,
        };
        budget.note_capacity(capacity);
        Ok(Self {
            read,
            write,
            capacity,
            budget: Arc::clone(budget),
        })
    }

    pub fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Bytes the pipe holds before a splice into it would block.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.budget.give_back();
    }
}

/// One worker's idle pipes; creates new ones within the budget when none is idle.
#[derive(Debug)]
pub struct PipePool {
    idle: Vec<Pipe>,
    budget: Arc<PipeBudget>,
    created: u64,
}

impl PipePool {
    pub fn new(budget: Arc<PipeBudget>) -> Self {
        Self {
            idle: Vec::new(),
            budget,
            created: 0,
        }
    }

    /// A pipe, or `None` when the budget is spent or the kernel refuses one (descriptors exhausted): the
    /// flow then copies through a buffer.
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(pipe) = self.idle.pop() {
            return Some(pipe);
        }
        if !self.budget.try_take() {
            self.budget.starve(&"the pipe budget is spent");
            return None;
        }
        match Pipe::create(&self.budget) {
            Ok(pipe) => {
                self.created += 1;
                Some(pipe)
            }
            Err(e) => {
                // The budget place is released with the failed attempt.
                self.budget.give_back();
                self.budget.starve(&e);
                None
            }
        }
    }

    /// Returns a pipe that is empty. A pipe that may still hold bytes must be dropped instead, or the
    /// next flow would forward someone else's data. A pipe smaller than asked for is closed, so its
    /// memory goes back to the user's budget and a full-size one can take its place.
    pub fn give_back(&mut self, pipe: Pipe) {
        if pipe.capacity >= self.budget.pipe_size && self.idle.len() < self.budget.idle_per_worker {
            self.idle.push(pipe);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    pub fn created(&self) -> u64 {
        self.created
    }
}

/// A copy-mode buffer: `data[start..end]` holds bytes read but not yet written.
#[derive(Debug)]
pub struct Buffer {
    pub data: Box<[u8]>,
    pub start: usize,
    pub end: usize,
}

/// Reuses copy-mode buffers.
#[derive(Debug)]
pub struct BufferPool {
    idle: Vec<Buffer>,
    size: usize,
}

impl BufferPool {
    pub fn new(size: usize) -> Self {
        Self {
            idle: Vec::new(),
            size,
        }
    }

    pub fn take(&mut self) -> Buffer {
        self.idle.pop().unwrap_or_else(|| Buffer {
            data: vec![0u8; self.size].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    pub fn give_back(&mut self, mut buffer: Buffer) {
        buffer.start = 0;
        buffer.end = 0;
        if self.idle.len() < MAX_IDLE_BUFFERS {
            self.idle.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose budget never binds (the process's own limits still do).
    fn pool(size: usize) -> PipePool {
        PipePool::new(Arc::new(PipeBudget::new(u32::MAX, size, 1)))
    }

    #[test]
    fn pipes_are_reused_and_sized() {
        let mut pool = pool(256 * 1024);
        let pipe = pool.take().unwrap();
        assert!(pipe.capacity() >= 64 * 1024);
        pool.give_back(pipe);
        let _again = pool.take().unwrap();
        assert_eq!(pool.created(), 1);
        assert_eq!(pool.idle(), 0);
    }

    /// The kernel gives a pipe of an unprivileged user who spent `fs.pipe-user-pages-soft` only 2 pages
    /// and refuses to grow it; the pool must record that, or a flow splices 8 KiB per poll round trip
    /// while believing the pipe holds 64 KiB. Such a pipe must not be pooled either.
    #[test]
    fn pipes_record_the_size_the_kernel_really_gave_them() {
        let soft: usize = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if soft == 0 {
            eprintln!(
                "fs.pipe-user-pages-soft is 0 (no per-user pipe limit): nothing to check here"
            );
            return;
        }
        const SIZE: usize = 1 << 20;
        std::thread::spawn(move || {
            crate::sys::faults::drop_resource_capabilities();
            let mut pool = pool(SIZE);
            // Enough full-size pipes to spend this user's whole budget, and some more.
            let pipes: Vec<Pipe> = (0..soft * 4096 / SIZE + 8)
                .map(|_| pool.take().unwrap())
                .collect();
            for (i, pipe) in pipes.iter().enumerate() {
                let real = crate::sys::pipe_size(pipe.write_end()).unwrap();
                assert_eq!(pipe.capacity(), real, "pipe {i}: recorded capacity");
            }
            let full = pipes.iter().filter(|p| p.capacity() >= SIZE).count();
            assert!(full < pipes.len(), "the per-user budget was never reached");
            for pipe in pipes {
                pool.give_back(pipe);
            }
            assert_eq!(pool.idle(), full, "a shrunk pipe is closed, not pooled");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn idle_pool_is_bounded() {
        let mut pool = pool(64 * 1024);
        let pipes: Vec<_> = (0..MAX_IDLE_PIPES + 5)
            .map(|_| pool.take().unwrap())
            .collect();
        for pipe in pipes {
            pool.give_back(pipe);
        }
        assert_eq!(pool.idle(), MAX_IDLE_PIPES);
    }

    #[test]
    fn the_budget_bounds_pipes_across_pools_and_closing_one_frees_its_place() {
        let budget = Arc::new(PipeBudget::new(3, 64 * 1024, 2));
        let (mut a, mut b) = (PipePool::new(budget.clone()), PipePool::new(budget.clone()));
        let held = [a.take().unwrap(), b.take().unwrap(), a.take().unwrap()];
        assert!(
            b.take().is_none(),
            "the fourth pipe is over the budget: copy instead"
        );
        assert_eq!(budget.live(), 3);
        let [first, second, third] = held;
        drop(first);
        assert_eq!(budget.live(), 2);
        let again = b.take().expect("a closed pipe frees its place");
        // One idle pipe per worker at most here (3 / (2 * 2) rounds down to 0): nothing is kept idle.
        b.give_back(again);
        a.give_back(second);
        assert_eq!((a.idle(), b.idle()), (0, 0));
        drop(third);
        assert_eq!(budget.live(), 0);
    }

    #[test]
    fn the_user_pipe_budget_in_full_size_pipes() {
        assert_eq!(pipes_within_user_pages(16_384, 256 * 1024), Some(256));
        assert_eq!(pipes_within_user_pages(16_384, 1 << 20), Some(64));
        // The kernel rounds a pipe up to a power of two of pages.
        assert_eq!(pipes_within_user_pages(16_384, 100 * 1024), Some(512));
        assert_eq!(pipes_within_user_pages(0, 1 << 20), None);
    }

    #[test]
    fn capabilities_that_exempt_from_the_pipe_limits() {
        let status = |caps: &str| format!("Name:\tx\nCapEff:\t{caps}\nCapBnd:\t0\n");
        assert!(
            exempt_from_pipe_limits(&status("000001fffeffffff")),
            "CAP_SYS_ADMIN"
        );
        assert!(
            exempt_from_pipe_limits(&status("0000000001000000")),
            "CAP_SYS_RESOURCE"
        );
        assert!(!exempt_from_pipe_limits(&status("0000000000000000")));
        assert!(!exempt_from_pipe_limits("no capabilities line"));
    }
}
