//! One eventfd per worker, polled by its ring: how other threads get a worker's attention (a new table,
//! a free slot for its queue, shutdown) without the worker ever blocking on a lock.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::sys;

thread_local! {
    static CURRENT_WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as worker `index`: whatever it releases need not wake itself.
pub fn set_current_worker(index: usize) {
    CURRENT_WORKER.with(|c| c.set(Some(index)));
}

/// The worker this thread runs, if it is one.
pub fn current_worker() -> Option<usize> {
    CURRENT_WORKER.with(Cell::get)
}

#[derive(Debug)]
pub struct Wakers {
    fds: Vec<OwnedFd>,
}

impl Wakers {
    pub fn new(workers: usize) -> io::Result<Self> {
        Ok(Self {
            fds: (0..workers)
                .map(|_| sys::eventfd())
                .collect::<io::Result<_>>()?,
        })
    }

    pub fn wake(&self, worker: usize) {
        sys::eventfd_signal(self.fds[worker].as_fd());
    }

    pub fn wake_all(&self) {
        for fd in &self.fds {
            sys::eventfd_signal(fd.as_fd());
        }
    }

    /// The descriptor worker `worker` polls.
    pub fn fd(&self, worker: usize) -> RawFd {
        self.fds[worker].as_raw_fd()
    }

    /// Called by the worker after a wake-up so the next poll waits for a new signal.
    pub fn reset(&self, worker: usize) {
        sys::eventfd_drain(self.fds[worker].as_fd());
    }

    /// Whether worker `worker` has a wake-up pending (tests).
    #[cfg(test)]
    pub fn is_signaled(&self, worker: usize) -> bool {
        sys::wait_readable(self.fds[worker].as_fd(), 0).unwrap()
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}
