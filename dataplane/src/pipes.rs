//! Per-worker pools of the intermediate storage a flow needs while bytes are in transit: kernel pipes for
//! the splice modes, user-space buffers for the copy mode.
//!
//! A flow holds a pipe or buffer only while it has bytes in flight and gives it back as soon as it is empty,
//! like HAProxy's `maxpipes`: an idle connection costs two sockets and no pipe. That keeps the descriptor
//! budget (the fd hard limit here is 20,000) for connections, and keeps the per-user pipe memory limit
//! (`fs.pipe-user-pages-soft`) from shrinking new pipes to one page.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys;

/// Pipes kept for reuse per worker beyond those in use.
pub const MAX_IDLE_PIPES: usize = 256;
/// Buffers kept for reuse per worker beyond those in use.
pub const MAX_IDLE_BUFFERS: usize = 256;

/// A pipe whose both ends we own. Empty whenever it is in the pool.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
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

/// Reuses empty pipes; creates new ones sized to `pipe_size` when none is idle.
#[derive(Debug)]
pub struct PipePool {
    idle: Vec<Pipe>,
    pipe_size: usize,
    created: u64,
}

impl PipePool {
    pub fn new(pipe_size: usize) -> Self {
        Self {
            idle: Vec::new(),
            pipe_size,
            created: 0,
        }
    }

    pub fn take(&mut self) -> io::Result<Pipe> {
        if let Some(pipe) = self.idle.pop() {
            return Ok(pipe);
        }
        let (read, write) = sys::pipe()?;
        // The kernel may refuse a large size (fs.pipe-max-size, per-user limits); the default still works.
        let capacity =
            sys::set_pipe_size(write.as_fd(), self.pipe_size).unwrap_or(DEFAULT_PIPE_CAPACITY);
        self.created += 1;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Returns a pipe that is empty. A pipe that may still hold bytes must be dropped instead, or the
    /// next flow would forward someone else's data.
    pub fn give_back(&mut self, pipe: Pipe) {
        if self.idle.len() < MAX_IDLE_PIPES {
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

/// Linux's default pipe capacity (16 pages).
const DEFAULT_PIPE_CAPACITY: usize = 64 * 1024;

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

    #[test]
    fn pipes_are_reused_and_sized() {
        let mut pool = PipePool::new(256 * 1024);
        let pipe = pool.take().unwrap();
        assert!(pipe.capacity() >= 64 * 1024);
        pool.give_back(pipe);
        let _again = pool.take().unwrap();
        assert_eq!(pool.created(), 1);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn idle_pool_is_bounded() {
        let mut pool = PipePool::new(64 * 1024);
        let pipes: Vec<_> = (0..MAX_IDLE_PIPES + 5)
            .map(|_| pool.take().unwrap())
            .collect();
        for pipe in pipes {
            pool.give_back(pipe);
        }
        assert_eq!(pool.idle(), MAX_IDLE_PIPES);
    }
}
