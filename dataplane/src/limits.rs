//! Process-wide limits that keep the dataplane inside its file descriptors, the way HAProxy does it.
//!
//! - [`FdPlan`]: from RLIMIT_NOFILE, a reserve for everything that is not a proxied connection, a cap on
//!   connections (`--max-connections-total`, or derived) and a cap on splice pipes.
//! - [`ConnectionGate`]: the cap, enforced across workers with one atomic counter. A worker that takes the
//!   last place stops accepting: new clients wait in the kernel's accept queue (their handshake done,
//!   nothing refused) instead of being accepted and then reset for want of a backend socket or a pipe.
//!   The worker that frees a place wakes the paused ones. Every crossing is logged once per state change.
//!
//! Accepted connections always count, even past the cap: the kernel completed their handshake, and closing
//! them would reset a client. A worker overshoots by at most the accepts already in its completion queue,
//! which the reserve absorbs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_utils::CachePadded;

use crate::pipes::{self, PipeBudget};
use crate::routing::Wakers;
use crate::sys;

/// The process-wide budgets, as the workers and the admin endpoint see them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub plan: FdPlan,
    pub gate: Arc<ConnectionGate>,
    pub pipes: Arc<PipeBudget>,
    /// Full-size pipes this user may hold (`fs.pipe-user-pages-soft`), when that limit applies to us.
    pub pipes_by_user_pages: Option<u32>,
}

impl Limits {
    /// Raises the soft descriptor limit to the hard one, shares it out (`max_connections`: the flag, 0 to
    /// derive) and sizes the pipe budget within this user's pipe memory; logs the plan.
    pub fn establish(
        max_connections: u32,
        pipe_size: usize,
        workers: usize,
        wakers: Arc<Wakers>,
    ) -> Self {
        let nofile = match sys::raise_nofile_limit() {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
                1024
            }
        };
        let plan = FdPlan::new(nofile, Some(max_connections));
        let exempt = std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|status| pipes::exempt_from_pipe_limits(&status));
        let soft_pages = std::fs::read_to_string("/proc/sys/fs/pipe-user-pages-soft")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let pipes_by_user_pages = (!exempt)
            .then(|| pipes::pipes_within_user_pages(soft_pages, pipe_size))
            .flatten();
        let max_pipes = pipes_by_user_pages.map_or(plan.max_pipes, |p| p.min(plan.max_pipes));
        tracing::info!(
            nofile = plan.nofile,
            reserve = plan.reserve,
            max_connections = plan.max_connections,
            max_pipes,
            pipe_size,
            "descriptor plan"
        );
        if let Some(short) = plan.shortfall {
            tracing::warn!(
                max_connections = plan.max_connections,
                nofile = plan.nofile,
                missing = short,
                "--max-connections-total needs more descriptors than RLIMIT_NOFILE leaves after the \
                 reserve: near the cap, accepts fail and are retried; raise LimitNOFILE"
            );
        }
        if let Some(by_pages) = pipes_by_user_pages
            && by_pages < plan.max_pipes
        {
            tracing::warn!(
                soft_pages,
                pipes = by_pages,
                pipe_size,
                "fs.pipe-user-pages-soft limits splice pipes: at most this many flows splice at once, \
                 the others copy through buffers; raise the sysctl (or run with CAP_SYS_RESOURCE) for more"
            );
        }
        Self {
            gate: Arc::new(ConnectionGate::new(plan.max_connections, wakers)),
            pipes: Arc::new(PipeBudget::new(max_pipes, pipe_size, workers)),
            plan,
            pipes_by_user_pages,
        }
    }
}

/// Descriptors always kept out of the connection budget: listening sockets (one per worker and listener),
/// the admin endpoint and up to 16 of its requests, the controlplane and takeover sockets, eventfds,
/// rings, the state file, standard streams.
pub const MIN_RESERVE: u64 = 128;
/// Above [`MIN_RESERVE`], this fraction of the descriptor limit is kept in reserve (1/64).
const RESERVE_DIVISOR: u64 = 64;

/// How the descriptor limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// RLIMIT_NOFILE (soft) in force.
    pub nofile: u64,
    /// Descriptors left for listeners, the admin endpoint and the like.
    pub reserve: u64,
    /// Connections (client sockets) the whole process holds at most; each also has a backend socket.
    pub max_connections: u32,
    /// Splice pipes (two descriptors each) the whole process holds at most, idle ones included; a flow
    /// that finds none copies through a buffer instead.
    pub max_pipes: u32,
    /// `--max-connections-total` was given and needs more descriptors than the limit leaves: by how many.
    pub shortfall: Option<u64>,
}

impl FdPlan {
    /// Shares out `nofile` descriptors; `requested` is `--max-connections-total` (0 or absent: derive it).
    pub fn new(nofile: u64, requested: Option<u32>) -> Self {
        let reserve = (nofile / RESERVE_DIVISOR).max(MIN_RESERVE).min(nofile / 2);
        let usable = nofile.saturating_sub(reserve);
        match requested.filter(|&n| n > 0) {
            None => {
                // Two sockets per connection and a pipe (two descriptors) for a quarter of them, HAProxy's
                // default maxpipes: 2.5 descriptors per connection.
                let max_connections = clamp_u32(usable * 2 / 5).max(1);
                Self {
                    nofile,
                    reserve,
                    max_connections,
                    max_pipes: max_connections / 4,
                    shortfall: None,
                }
            }
            Some(n) => {
                let sockets = 2 * u64::from(n);
                // Pipes get what the sockets leave, up to a quarter of the connections.
                let left_for_pipes = usable.saturating_sub(sockets) / 2;
                Self {
                    nofile,
                    reserve,
                    max_connections: n,
                    max_pipes: clamp_u32(left_for_pipes.min(u64::from(n / 4))),
                    shortfall: (sockets > usable).then(|| sockets - usable),
                }
            }
        }
    }
}

fn clamp_u32(value: u64) -> u32 {
    value.min(u64::from(u32::MAX)) as u32
}

/// The process-wide connection cap, shared by every worker.
#[derive(Debug)]
pub struct ConnectionGate {
    open: CachePadded<AtomicU32>,
    limit: u32,
    /// Workers that stopped accepting at the cap; the one that frees a place wakes them.
    paused: Box<[AtomicBool]>,
    paused_count: AtomicU32,
    wakers: Arc<Wakers>,
    /// At (or near) the cap, for the log: set at the cap, cleared below [`ConnectionGate::calm_mark`]
    /// (three quarters of the cap).
    saturated: AtomicBool,
    /// An accept failed for want of descriptors and none has succeeded since.
    out_of_fds: AtomicBool,
}

impl ConnectionGate {
    pub fn new(limit: u32, wakers: Arc<Wakers>) -> Self {
        Self {
            open: CachePadded::new(AtomicU32::new(0)),
            limit: limit.max(1),
            paused: (0..wakers.len()).map(|_| AtomicBool::new(false)).collect(),
            paused_count: AtomicU32::new(0),
            wakers,
            saturated: AtomicBool::new(false),
            out_of_fds: AtomicBool::new(false),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Connections open now, all workers together.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::SeqCst)
    }

    pub fn has_room(&self) -> bool {
        self.open() < self.limit
    }

    /// Connections that may still be accepted before the cap (a hint: read without ordering).
    pub fn headroom(&self) -> u32 {
        self.limit.saturating_sub(self.open.load(Ordering::Relaxed))
    }

    /// Some worker stopped accepting at the cap.
    pub fn any_paused(&self) -> bool {
        self.paused_count.load(Ordering::SeqCst) > 0
    }

    /// Counts an accepted connection. Returns false when the cap is reached: the caller stops accepting.
    pub fn admit(&self) -> bool {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        if now < self.limit {
            return true;
        }
        if !self.saturated.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                limit = self.limit,
                hint = "new clients wait in the kernel's accept queue; raise --max-connections-total \
                        and LimitNOFILE to allow more",
                "connection cap reached: accepting paused"
            );
        }
        false
    }

    /// A connection's sockets are closed. Wakes workers paused at the cap once there is room.
    pub fn release(&self) {
        let now = self.open.fetch_sub(1, Ordering::SeqCst) - 1;
        if now < self.calm_mark()
            && self.saturated.load(Ordering::Relaxed)
            && self.saturated.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                limit = self.limit,
                open = now,
                "below the connection cap again: accepting"
            );
        }
        if now < self.limit && self.paused_count.load(Ordering::SeqCst) > 0 {
            for (worker, paused) in self.paused.iter().enumerate() {
                if paused.swap(false, Ordering::SeqCst) {
                    self.paused_count.fetch_sub(1, Ordering::SeqCst);
                    self.wakers.wake(worker);
                }
            }
        }
    }

    /// Worker `worker` stopped accepting. Returns true if there is room again already (a release raced
    /// with the pause): the worker then resumes at once instead of waiting for a wake-up.
    pub fn pause(&self, worker: usize) -> bool {
        if let Some(flag) = self.paused.get(worker)
            && !flag.swap(true, Ordering::SeqCst)
        {
            self.paused_count.fetch_add(1, Ordering::SeqCst);
        }
        // Both sides use SeqCst: either the releaser sees our flag, or we see its decrement here.
        self.has_room()
    }

    /// Worker `worker` accepts again (it saw room itself).
    pub fn unpause(&self, worker: usize) {
        if let Some(flag) = self.paused.get(worker)
            && flag.swap(false, Ordering::SeqCst)
        {
            self.paused_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Below this the cap's state change is logged: well under the cap, so a count hovering at the cap
    /// logs one line, not one per connection.
    fn calm_mark(&self) -> u32 {
        self.limit - (self.limit / 4).max(1).min(self.limit - 1)
    }

    /// An accept or a backend socket failed for want of descriptors (EMFILE, ENFILE) or memory; logged
    /// once per episode.
    pub fn fd_starved(&self, error: &std::io::Error) {
        if !self.out_of_fds.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                open = self.open(),
                limit = self.limit,
                hint = "accepts are retried every 100 ms and connections wait in the queue for a backend \
                        socket; raise LimitNOFILE or lower --max-connections-total",
                "out of file descriptors"
            );
        }
    }

    /// An accept or a backend socket succeeded: ends an out-of-descriptors episode.
    pub fn fd_available(&self) {
        if self.out_of_fds.load(Ordering::Relaxed) && self.out_of_fds.swap(false, Ordering::AcqRel)
        {
            tracing::info!("file descriptors available again");
        }
    }
}

/// Whether an accept error means "no descriptor or memory for the new socket right now".
pub fn is_starvation(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_cap_leaves_a_reserve_and_room_for_pipes() {
        let plan = FdPlan::new(512, None);
        assert_eq!(plan.reserve, MIN_RESERVE);
        assert_eq!(plan.max_connections, 153);
        assert_eq!(plan.max_pipes, 38);
        let used = 2 * u64::from(plan.max_connections) + 2 * u64::from(plan.max_pipes);
        assert!(
            used + plan.reserve <= 512,
            "{plan:?} needs {used} + reserve"
        );

        let big = FdPlan::new(1 << 20, None);
        assert_eq!(big.reserve, (1 << 20) / 64);
        assert_eq!(big.max_connections, 412_876);
        assert!(big.shortfall.is_none());
    }

    #[test]
    fn an_explicit_cap_beyond_the_descriptors_is_kept_and_its_shortfall_named() {
        let plan = FdPlan::new(20_000, Some(9_800));
        assert_eq!(plan.max_connections, 9_800);
        assert_eq!(plan.reserve, 312);
        assert_eq!(plan.max_pipes, (20_000 - 312 - 19_600) / 2);
        assert_eq!(plan.shortfall, None);
        let over = FdPlan::new(1024, Some(1000));
        assert_eq!(
            over.max_pipes, 0,
            "no descriptor left for pipes: flows copy"
        );
        assert_eq!(over.shortfall, Some(2000 - (1024 - 128)));
    }

    #[test]
    fn a_tiny_limit_still_allows_a_connection() {
        let plan = FdPlan::new(16, None);
        assert!(plan.max_connections >= 1);
    }

    #[test]
    fn the_gate_pauses_at_the_cap_and_the_release_wakes_the_paused_worker() {
        let wakers = Arc::new(Wakers::new(2).unwrap());
        let gate = ConnectionGate::new(2, Arc::clone(&wakers));
        assert!(gate.admit());
        assert!(!gate.admit(), "the second connection reaches the cap");
        assert!(!gate.pause(1), "no room: stay paused");
        assert!(gate.any_paused());
        gate.release();
        assert!(wakers.is_signaled(1), "the paused worker is woken");
        assert!(!wakers.is_signaled(0), "the other one is not");
        assert!(!gate.any_paused());
        assert!(gate.has_room());
    }

    #[test]
    fn a_worker_woken_without_room_registers_again_and_is_woken_by_the_next_release() {
        let wakers = Arc::new(Wakers::new(1).unwrap());
        let gate = ConnectionGate::new(1, Arc::clone(&wakers));
        assert!(!gate.admit());
        assert!(!gate.pause(0));
        gate.release();
        assert!(wakers.is_signaled(0));
        wakers.reset(0);
        // Another worker takes the freed place before this one looks.
        assert!(!gate.admit());
        assert!(!gate.pause(0), "still no room: paused again");
        gate.release();
        assert!(wakers.is_signaled(0), "the next release wakes it again");
    }

    #[test]
    fn a_release_racing_with_the_pause_is_not_lost() {
        let wakers = Arc::new(Wakers::new(1).unwrap());
        let gate = ConnectionGate::new(1, wakers);
        assert!(!gate.admit());
        gate.release();
        assert!(
            gate.pause(0),
            "room appeared before the pause: resume at once"
        );
        gate.unpause(0);
        assert!(!gate.any_paused());
    }
}
