//! Thin, safe wrappers over the few system calls the data path makes directly.
//!
//! This is one of the two modules with `unsafe` (the other is `worker::ring`). Every function takes
//! borrowed or owned file descriptors, checks the return value and turns `-1` into `io::Error`, so the
//! rest of the dataplane never touches `libc` directly.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Moves up to `len` bytes between a socket and a pipe without blocking (`SPLICE_F_NONBLOCK|SPLICE_F_MOVE`).
///
/// `Ok(0)` means end of file on `from`; `WouldBlock` means try again after readiness.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are valid for the duration of the borrow; null offsets are required for
    // pipes and sockets, and no memory of ours is passed.
    let ret = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    check_size(ret)
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Resizes a pipe; returns the size the kernel granted (it rounds up to a power of two pages).
pub fn set_pipe_size(pipe: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
    let granted =
        check(unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) })?;
    Ok(granted as usize)
}

/// A pipe's real capacity in bytes (`F_GETPIPE_SZ`).
pub fn pipe_size(pipe: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument and touches no memory of ours.
    let size = check(unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
    Ok(size as usize)
}

/// A non-blocking, close-on-exec eventfd used to wake a worker's ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking whoever polls it.
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes exactly 8 bytes from a live u64, as eventfd requires. A full counter (EAGAIN) still
    // leaves the fd readable, which is all a wake-up needs, so the result is deliberately ignored.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter so the next poll waits for a new signal.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut value: u64 = 0;
    // SAFETY: reads exactly 8 bytes into a live u64; EAGAIN (nothing pending) is fine to ignore.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family, with `TCP_NODELAY`.
pub fn tcp_socket_for(addr: &SocketAddr) -> io::Result<OwnedFd> {
    #[cfg(test)]
    if let Some(errno) = faults::take_socket_failure() {
        return Err(io::Error::from_raw_os_error(errno));
    }
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket has no pointer arguments.
    let fd = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_nodelay(std::os::fd::AsFd::as_fd(&fd))?;
    Ok(fd)
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int together with its exact size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Disables Nagle: a proxy must not add its own coalescing delay to what the endpoints chose.
pub fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Makes the next close send RST instead of FIN: used when bytes could not be delivered, so the peer
/// learns its stream was cut instead of seeing a clean (and silently truncated) end.
pub fn set_linger_zero(fd: BorrowedFd<'_>) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a pointer to a live `linger` together with its exact size. Failure only means the
    // close is graceful instead of abortive, so it is ignored.
    let _ = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Bytes received on a socket and not yet read (`FIONREAD`); 0 if it cannot be asked.
pub fn unread_bytes(fd: BorrowedFd<'_>) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into memory we own.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut count) };
    if ret < 0 { 0 } else { count.max(0) as usize }
}

/// Sends FIN after the queued bytes: the half-close the other side asked for.
pub fn shutdown_write(fd: BorrowedFd<'_>) {
    // SAFETY: shutdown has no pointer arguments. ENOTCONN (peer already gone) needs no handling here: the
    // next read or write on the socket reports the state that matters.
    let _ = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// Stops a listening socket: its accept queue is flushed (queued clients are reset) and new clients go
/// to the other sockets of the `SO_REUSEPORT` group, or are refused if there are none.
pub fn shutdown_listener(fd: RawFd) {
    // SAFETY: shutdown has no pointer arguments; on a descriptor that is not a listening socket it fails
    // harmlessly with ENOTCONN/ENOTSOCK.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// Non-blocking read into `buf` (the copy forwarding mode).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into memory we exclusively borrow.
    check_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Non-blocking send of `buf`; `MSG_NOSIGNAL` turns a closed peer into `EPIPE` instead of a signal.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `buf.len()` bytes from memory we borrow.
    check_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Most descriptors one `SCM_RIGHTS` message may carry (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 200;

/// The one payload byte that descriptors travel with.
fn one_byte(byte: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    }
}

/// A message header over `iov` with `control` as its ancillary buffer. It points into both, which the
/// caller keeps alive (and unmoved) until the send or receive returns.
fn fd_message(control: &mut [u8], iov: &mut libc::iovec) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid empty header that is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    msg
}

/// Sends `fds` over a Unix stream socket with one byte of payload (`SCM_RIGHTS`).
pub fn send_fds(socket: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(
        !fds.is_empty() && fds.len() <= MAX_FDS_PER_MESSAGE,
        "1..={MAX_FDS_PER_MESSAGE} descriptors per message"
    );
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload_len = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload_len as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut byte = [0u8; 1];
    let mut iov = one_byte(&mut byte);
    let msg = fd_message(&mut control, &mut iov);
    // SAFETY: the control buffer is CMSG_SPACE(payload) bytes, so the first header and its data fit; the
    // pointers stay valid until sendmsg returns, and the kernel only reads them.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(payload_len as u32) as usize;
        std::ptr::copy_nonoverlapping(
            raw.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(header),
            payload_len,
        );
        loop {
            let sent = libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if sent >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break sent;
            }
        }
    };
    check_size(sent).map(drop)
}

/// Receives one `SCM_RIGHTS` message of up to `max` descriptors; they arrive close-on-exec.
pub fn recv_fds(socket: BorrowedFd<'_>, max: usize) -> io::Result<Vec<OwnedFd>> {
    let max = max.min(MAX_FDS_PER_MESSAGE);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((max * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut byte = [0u8; 1];
    let mut iov = one_byte(&mut byte);
    let mut msg = fd_message(&mut control, &mut iov);
    let received = loop {
        // SAFETY: the buffers outlive the call and their sizes are in the header.
        let ret = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if received == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed before sending descriptors",
        ));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were truncated (more than expected were sent)",
        ));
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control headers the kernel wrote into `control`, within msg_controllen; every
    // SCM_RIGHTS descriptor is new in this process and owned by nobody else.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let count = ((*header).cmsg_len - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    Ok(fds)
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The uid of the process at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_uid(socket: BorrowedFd<'_>) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into a live ucred and updates `len`.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (ret == 0).then_some(cred.uid)
}

/// Waits up to `timeout_ms` for `fd` to become readable; `Ok(false)` on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls exactly one live pollfd.
    match unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Lets a descriptor survive `exec` (for handing a pipe to a child process).
pub fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD take and return plain ints.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC) })
        .map(drop)
}

/// Takes ownership of the descriptor whose number the environment variable `variable` holds: one the
/// parent process left open for this process's exclusive use (`RINGWAY_READY_FD`).
///
/// `None` when the variable is unset or not a number, when that descriptor is not open, or when it was
/// taken already: each inherited descriptor gets one owner, however often this is called.
pub fn take_inherited_fd(variable: &str) -> Option<OwnedFd> {
    take_inherited(std::env::var(variable).ok()?.parse().ok()?)
}

/// Descriptors [`take_inherited_fd`] handed out; a number in here has its owner already.
static INHERITED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// `fd` as an owned descriptor if it is open and was not taken before. Private: only a number a parent
/// handed over for our exclusive use may reach it.
fn take_inherited(fd: RawFd) -> Option<OwnedFd> {
    let mut taken = INHERITED.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: F_GETFD only inspects the descriptor table.
    if fd < 3 || taken.contains(&fd) || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    taken.insert(fd);
    // SAFETY: the descriptor is open, was passed to us by our parent for our exclusive use, and `taken`
    // makes this its only owner in the process.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The soft RLIMIT_MEMLOCK in bytes (`Some(None)` = unlimited), or `None` if it cannot be read.
pub fn memlock_limit() -> Option<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into memory we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    Some((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (as far as `fs.nr_open` allows) and returns the soft
/// limit now in force. Descriptors are the dataplane's capacity: nothing is gained by a lower soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into memory we own.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let wanted = limit.rlim_max.min(nr_open);
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from memory we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = wanted;
        }
    }
    Ok(limit.rlim_cur)
}

/// A CPU set holding only `core`, for pinning io-wq helpers (used only by `uring-splice`).
pub fn cpu_set_of(core: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only writes inside `set`; `core` is bounded by the number of cores.
    unsafe { libc::CPU_SET(core, &mut set) };
    set
}

/// Faults unit tests inject into this thread's system calls, for failures a test cannot otherwise cause
/// without starving the whole test process (descriptor exhaustion).
#[cfg(test)]
pub mod faults {
    use std::cell::Cell;

    thread_local! {
        static SOCKET_FAILURES: Cell<(u32, i32)> = const { Cell::new((0, 0)) };
    }

    /// The next `count` backend sockets created on this thread fail with `errno`.
    pub fn fail_sockets(count: u32, errno: i32) {
        SOCKET_FAILURES.with(|f| f.set((count, errno)));
    }

    /// Drops CAP_SYS_RESOURCE and CAP_SYS_ADMIN from this thread's effective set (capabilities are per
    /// thread), so the kernel applies the per-user pipe limits to it as to an unprivileged dataplane.
    pub fn drop_resource_capabilities() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_SYS_ADMIN: u32 = 21;
        const CAP_SYS_RESOURCE: u32 = 24;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget writes one header and two data structs, which we own, for the calling thread.
        let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(got, 0, "capget: {}", std::io::Error::last_os_error());
        data[0].effective &= !((1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_RESOURCE));
        // SAFETY: capset reads the same structs; it changes only the calling thread's credentials.
        let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(set, 0, "capset: {}", std::io::Error::last_os_error());
    }

    pub(super) fn take_socket_failure() -> Option<i32> {
        SOCKET_FAILURES.with(|f| {
            let (count, errno) = f.get();
            (count > 0).then(|| {
                f.set((count - 1, errno));
                errno
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn splice_moves_socket_bytes_through_a_pipe_and_reports_eof() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut c, d) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let (r, w) = pipe().unwrap();
        assert!(set_pipe_size(w.as_fd(), 128 * 1024).unwrap() >= 128 * 1024);
        assert_eq!(
            splice(b.as_fd(), w.as_fd(), 4096).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.write_all(b"hello splice").unwrap();
        assert_eq!(splice(b.as_fd(), w.as_fd(), 4096).unwrap(), 12);
        assert_eq!(splice(r.as_fd(), d.as_fd(), 4096).unwrap(), 12);
        let mut got = [0u8; 12];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");
        drop(a);
        assert_eq!(splice(b.as_fd(), w.as_fd(), 4096).unwrap(), 0);
    }

    #[test]
    fn an_inherited_descriptor_gets_one_owner() {
        let (read, write) = std::io::pipe().unwrap();
        let number = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(write));
        let mut owned = std::fs::File::from(take_inherited(number).expect("an open descriptor"));
        assert!(take_inherited(number).is_none(), "taken already");
        assert!(take_inherited(libc::STDERR_FILENO).is_none(), "never stdio");
        owned.write_all(b"ready").unwrap();
        drop(owned);
        let mut got = String::new();
        (&read).read_to_string(&mut got).unwrap();
        assert_eq!(got, "ready", "the write end was the one handed over");
    }

    #[test]
    fn descriptors_cross_a_unix_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_fds(a.as_fd(), &[r.as_fd(), w.as_fd()]).unwrap();
        let got = recv_fds(b.as_fd(), 8).unwrap();
        assert_eq!(got.len(), 2);
        // The received write end feeds the original read end: same pipe.
        let mut writer = std::fs::File::from(got[1].try_clone().unwrap());
        writer.write_all(b"x").unwrap();
        let mut reader = std::fs::File::from(r);
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn eventfd_signal_and_drain() {
        let fd = eventfd().unwrap();
        eventfd_signal(fd.as_fd());
        eventfd_signal(fd.as_fd());
        let mut value = [0u8; 8];
        let mut file = std::fs::File::from(fd.try_clone().unwrap());
        file.read_exact(&mut value).unwrap();
        assert_eq!(u64::from_ne_bytes(value), 2);
        eventfd_drain(fd.as_fd());
    }
}
