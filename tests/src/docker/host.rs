//! What a Docker daemon can leave on the host, looked up and removed: processes, mounts, cgroups, the few
//! directories it creates outside its own roots, network interfaces and firewall rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directories dockerd, containerd and BuildKit's runc create outside the roots they are given, whatever
/// the flags: plugin discovery sockets, shim sockets, runc state. Children before parents, so they can be
/// removed in this order.
const SHARED_DIRS: [&str; 5] = [
    "/run/docker/plugins",
    "/run/docker",
    "/run/containerd/s",
    "/run/containerd",
    "/run/runc",
];

/// The host's network interfaces, firewall rules and shared directories at one moment.
#[derive(Debug)]
pub(super) struct HostSnapshot {
    interfaces: BTreeSet<String>,
    firewall: BTreeSet<String>,
    existing_shared_dirs: Vec<&'static str>,
}

impl HostSnapshot {
    pub fn take() -> Self {
        Self {
            interfaces: interfaces(),
            firewall: docker_firewall_rules(),
            existing_shared_dirs: SHARED_DIRS
                .into_iter()
                .filter(|d| Path::new(d).exists())
                .collect(),
        }
    }

    /// Docker's interfaces and firewall rules that exist now and did not when `self` was taken; the
    /// interfaces are deleted once reported.
    pub fn appeared_since(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for name in interfaces().difference(&self.interfaces) {
            // Only names Docker gives (docker0, br-<network>, veth<id>): other tests running at the same
            // time may create interfaces of their own.
            if name.starts_with("docker") || name.starts_with("br-") || name.starts_with("veth") {
                problems.push(format!("network interface {name} was left behind"));
                let _ = Command::new("ip").args(["link", "delete", name]).output();
            }
        }
        for rule in docker_firewall_rules().difference(&self.firewall) {
            problems.push(format!("firewall rule left behind: {rule}"));
        }
        problems
    }

    /// Removes the shared directories that did not exist before, where they are empty (a daemon of
    /// someone else's may be using them meanwhile: then they stay, and are not ours to remove).
    pub fn remove_new_shared_dirs(&self) {
        for dir in SHARED_DIRS {
            if !self.existing_shared_dirs.contains(&dir) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Lines of the iptables, ip6tables and nftables rule sets that mention Docker, counters removed.
fn docker_firewall_rules() -> BTreeSet<String> {
    let mut rules = BTreeSet::new();
    for (program, args) in [
        ("iptables-save", &[][..]),
        ("ip6tables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let Ok(output) = Command::new(program).args(args).output() else {
            continue; // not installed: nothing of that kind can be checked or left
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if line.starts_with('#') || !line.to_ascii_lowercase().contains("docker") {
                continue;
            }
            let normalized: Vec<&str> = line
                .split_whitespace()
                .filter(|token| !token.starts_with('['))
                .collect();
            rules.insert(format!("{program}: {}", normalized.join(" ")));
        }
    }
    rules
}

/// Processes whose command line names a path under `root` (dockerd, containerd, shims, runc): `(pid,
/// command line)`.
pub(super) fn processes_under(root: &Path) -> Vec<(i32, String)> {
    let needle = root.display().to_string();
    let own = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| (pid, cmdline.trim().to_string()))
        })
        .collect()
}

/// Kills every process under `root` and waits (up to 10 s) until they are gone.
pub(super) fn kill_processes_under(root: &Path) {
    for (pid, _) in processes_under(root) {
        // SAFETY: kill has no pointer arguments; the pid names a path of this daemon's on its command line.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    crate::net::wait_until(std::time::Duration::from_secs(10), || {
        processes_under(root).is_empty()
    });
}

/// Mount points at or below `root`, deepest last.
pub(super) fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        // Field 5 is the mount point (octal escapes for spaces and the like; none in our paths).
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(root))
        .collect()
}

/// Mounts a tmpfs on `dir` (created), for the daemon's data root: image layers and build caches of a few
/// hundred MiB then live in memory, and go with one unmount instead of a slow recursive delete (about 20 s
/// on a busy disk). Where that fails the data root stays on disk, which works as well, only slower.
pub(super) fn mount_tmpfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (Ok(target), Ok(options)) = (
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()),
        std::ffi::CString::new(TMPFS_OPTIONS),
    ) else {
        return;
    };
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if mounted != 0 {
        eprintln!(
            "docker daemon: no tmpfs for {} ({}); its data root stays on disk",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// A bound, not a reservation: a tmpfs takes memory only for what is written (about 1 GiB here).
const TMPFS_OPTIONS: &str = "size=8g,mode=0711";

/// Detaches every mount at or below `root` (container root filesystems, the daemon's bind mount of the
/// host's network namespace), deepest first.
pub(super) fn unmount_all_under(root: &Path) {
    for mount in mounts_under(root).iter().rev() {
        let Ok(path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        unsafe {
            libc::umount2(path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// The cgroup directories named `parent` at the top of every cgroup hierarchy (one per controller with
/// cgroup v1, one with v2) that exist.
pub(super) fn cgroups_named(parent: &str) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            // "... mount-point options - fstype source super-options"
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| left.split(' ').nth(4))?
        })
        .map(|mount| Path::new(mount).join(parent))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Removes the cgroups named `parent` and every cgroup below them (they are empty once their processes
/// are gone; a cgroup directory is removed with rmdir, its files go with it).
pub(super) fn remove_cgroups(parent: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for dir in cgroups_named(parent) {
        remove_tree(&dir);
    }
}
