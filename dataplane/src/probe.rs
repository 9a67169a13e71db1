//! Start-up check of io_uring, so a host that cannot run the dataplane gets a message naming the cause
//! and the fix instead of an errno.

use std::io;

use io_uring::{IoUring, opcode, register::Probe};

/// Why io_uring cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "io_uring is disabled by the kernel.io_uring_disabled sysctl (value {value}); \
         enable it with `sysctl -w kernel.io_uring_disabled=0` (and in /etc/sysctl.d/ to persist)"
    )]
    DisabledBySysctl { value: String },
    #[error(
        "io_uring_setup was refused ({source}); a seccomp profile probably blocks io_uring \
         (containers: run with a profile that allows io_uring_setup, io_uring_enter and io_uring_register, \
         e.g. `--security-opt seccomp=unconfined`; systemd: SystemCallFilter= must allow them)"
    )]
    Blocked { source: io::Error },
    #[error(
        "cannot create an io_uring of {entries} entries: locked memory limit too low \
         (RLIMIT_MEMLOCK is {limit}); raise it with `LimitMEMLOCK=infinity` in the systemd unit, \
         `ulimit -l unlimited`, or `--ulimit memlock=-1` for containers, or lower --ring-entries"
    )]
    Memlock { entries: u32, limit: String },
    #[error(
        "this kernel has no io_uring ({source}); Ringway needs Linux 6.1 or newer with CONFIG_IO_URING"
    )]
    Missing { source: io::Error },
    #[error(
        "this kernel's io_uring lacks features Ringway needs ({what}); Linux 6.1 or newer is required"
    )]
    TooOld { what: String },
    #[error(
        "io_uring refused a ring of {entries} submission entries ({source}); the kernel allows at most \
         32768 (and 65536 completion entries): lower --ring-entries. If the size is not the cause, this \
         kernel lacks a setup flag Ringway needs (Linux 6.1 or newer)"
    )]
    Refused { entries: u32, source: io::Error },
    #[error("cannot create an io_uring: {source}")]
    Other { source: io::Error },
}

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";
/// The kernel's largest submission queue (`IORING_MAX_ENTRIES`).
const MAX_SQ_ENTRIES: u32 = 32_768;

/// Creates and drops a ring like the workers will, and checks the ops they use.
pub fn check(entries: u32, needs_uring_splice: bool) -> Result<(), ProbeError> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(entries)
        .map_err(|e| explain(e, entries))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| explain(e, entries))?;
    let mut needed = vec![
        ("accept", opcode::AcceptMulti::CODE),
        ("poll", opcode::PollAdd::CODE),
        ("connect", opcode::Connect::CODE),
        ("link timeout", opcode::LinkTimeout::CODE),
        ("cancel", opcode::AsyncCancel::CODE),
        ("receive", opcode::RecvMulti::CODE),
        ("send", opcode::Send::CODE),
        ("sendmsg", opcode::SendMsg::CODE),
    ];
    if needs_uring_splice {
        needed.push(("splice", opcode::Splice::CODE));
    }
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(_, code)| !probe.is_supported(*code))
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(ProbeError::TooOld {
            what: format!("missing ops: {}", missing.join(", ")),
        });
    }
    Ok(())
}

/// Turns a ring creation error into its cause and fix.
pub fn explain(error: io::Error, entries: u32) -> ProbeError {
    let sysctl = std::fs::read_to_string(SYSCTL)
        .map(|s| s.trim().to_string())
        .ok();
    match error.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => match sysctl {
            Some(value) if value != "0" => ProbeError::DisabledBySysctl { value },
            _ => ProbeError::Blocked { source: error },
        },
        Some(libc::ENOMEM) => ProbeError::Memlock {
            entries,
            limit: memlock_limit(),
        },
        Some(libc::ENOSYS) => ProbeError::Missing { source: error },
        // EINVAL is both "unknown setup flag" (an old kernel) and "too many entries": name both, size first
        // when the size is out of range.
        Some(libc::EINVAL) if entries > MAX_SQ_ENTRIES => ProbeError::Refused {
            entries,
            source: error,
        },
        Some(libc::EINVAL) => ProbeError::TooOld {
            what: format!("ring setup flags refused: {error}"),
        },
        _ => ProbeError::Other { source: error },
    }
}

fn memlock_limit() -> String {
    match crate::sys::memlock_limit() {
        Some(None) => "unlimited".into(),
        Some(Some(bytes)) => format!("{} KiB", bytes / 1024),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_passes() {
        check(64, true).unwrap();
    }

    #[test]
    fn errors_name_cause_and_fix() {
        let memlock = explain(io::Error::from_raw_os_error(libc::ENOMEM), 1024).to_string();
        assert!(
            memlock.contains("RLIMIT_MEMLOCK") && memlock.contains("LimitMEMLOCK="),
            "{memlock}"
        );
        let old = explain(io::Error::from_raw_os_error(libc::EINVAL), 1024).to_string();
        assert!(old.contains("6.1"), "{old}");
        let big = explain(io::Error::from_raw_os_error(libc::EINVAL), 65_536).to_string();
        assert!(
            big.contains("--ring-entries") && big.contains("32768"),
            "a ring too large is named as such: {big}"
        );
        let perm = explain(io::Error::from_raw_os_error(libc::EPERM), 1024).to_string();
        assert!(
            perm.contains("io_uring_disabled") || perm.contains("seccomp"),
            "{perm}"
        );
    }
}
