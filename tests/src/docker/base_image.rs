//! The base image, made from Debian's packages: no image registry is reachable here, so
//! `debian:bookworm-slim` is built with mmdebstrap (the minbase variant: Essential packages and apt, as
//! the official slim image) from the mirror the host's apt uses, cached as a tarball between runs, and
//! imported into each test daemon under the official name, so the repository's Dockerfile builds as it is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Docker, bounded_output, find_on_path};

/// The name the Dockerfile's runtime stage starts from.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";

const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";
/// A cold mmdebstrap takes about 95 s here; leave room for a slow mirror.
const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);

/// As the official slim image: no documentation, manual pages or translations (copyright files stay).
const SLIM_DPKG_OPTIONS: [&str; 5] = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
];

/// apt settings of the host's that the image's apt needs too, to reach the same mirror the same way:
/// proxies, and whether an old Release file is accepted (a snapshot mirror serves those).
const HOST_APT_SETTINGS: [&str; 4] = [
    "Acquire::http::Proxy",
    "Acquire::https::Proxy",
    "Acquire::Check-Valid-Until",
    "Acquire::Check-Date",
];

/// A tarball of Debian bookworm's minbase variant, made once with mmdebstrap and kept in `cache` (the
/// name carries a hash of the mirror and the options, so changing either makes a new one).
pub fn debian_base_image(cache: &Path) -> PathBuf {
    let mirror = host_mirror();
    let mut args = vec![format!("--variant={VARIANT}"), "--format=tar".to_string()];
    args.extend(
        host_apt_options()
            .into_iter()
            .map(|o| format!("--aptopt={o}")),
    );
    args.extend(SLIM_DPKG_OPTIONS.iter().map(|o| format!("--dpkgopt={o}")));
    let key = fnv1a(format!("{SUITE} {mirror} {}", args.join(" ")).as_bytes());
    let name = format!("debian-{SUITE}-{VARIANT}-{key:016x}.tar");
    let tarball = cache.join(&name);
    if tarball.exists() {
        return tarball;
    }
    let mmdebstrap = find_on_path("mmdebstrap")
        .expect("mmdebstrap is missing: install Debian's mmdebstrap (tools/test does)");
    std::fs::create_dir_all(cache)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", cache.display()));
    // mmdebstrap picks the compression from the name's extension: keep ".tar" at the end.
    let partial = cache.join(format!(".partial-{}-{name}", std::process::id()));
    let mut command = Command::new(&mmdebstrap);
    command.args(&args).arg(SUITE).arg(&partial).arg(&mirror);
    let result = bounded_output(&mut command, BUILD_LIMIT);
    let built = matches!(&result, Ok(output) if output.status.success()) && partial.exists();
    if !built {
        let _ = std::fs::remove_file(&partial);
        let said = match result {
            Ok(output) => format!(
                "{}\n{}{}",
                output.status,
                tail(&output.stdout),
                tail(&output.stderr)
            ),
            Err(e) => e,
        };
        panic!("mmdebstrap {SUITE} from {mirror} failed: {said}");
    }
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// Imports `tarball` into the daemon as [`BASE_IMAGE`], with the official image's default command.
pub fn import_base_image(docker: &Docker, tarball: &Path) {
    docker.ok(
        &[
            "import",
            "--change",
            r#"CMD ["bash"]"#,
            &tarball.display().to_string(),
            BASE_IMAGE,
        ],
        Duration::from_secs(300),
    );
}

/// The mirror the host's apt fetches bookworm's main component from (`apt-cache policy` lists it whatever
/// the sources format), else deb.debian.org.
fn host_mirror() -> String {
    let component = format!("{SUITE}/main");
    Command::new("apt-cache")
        .arg("policy")
        .output()
        .ok()
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find_map(|line| {
                    // " 500 http://deb.debian.org/debian bookworm/main amd64 Packages"
                    let tokens: Vec<&str> = line.split_whitespace().collect();
                    (tokens.len() >= 3 && tokens[2] == component && tokens[1].starts_with("http"))
                        .then(|| tokens[1].to_string())
                })
        })
        .unwrap_or_else(|| FALLBACK_MIRROR.to_string())
}

/// The host's values of [`HOST_APT_SETTINGS`], as apt configuration lines.
fn host_apt_options() -> Vec<String> {
    let Ok(output) = Command::new("apt-config").arg("dump").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            HOST_APT_SETTINGS
                .iter()
                .any(|setting| line.starts_with(&format!("{setting} ")))
        })
        .map(str::to_string)
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
