//! What ships for systemd: the unit pair (checked by `systemd-analyze verify` and for the design decisions
//! they encode), the environment file (every variable of both binaries) and the sysusers snippet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringway_tests::help;
use ringway_tests::procs::bin;

const UNITS: [&str; 2] = ["ringway-controlplane.service", "ringway-dataplane.service"];
/// Where the units expect the binaries (docs/operations.md installs them there).
const INSTALL_PREFIX: &str = "/usr/local/bin/ringway-";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn unit_text(name: &str) -> String {
    read(&format!("tools/systemd/{name}"))
}

// ---- systemd units ----

/// Runs `systemd-analyze verify` on `units` (name, text), written to a temporary directory with the
/// install paths of the binaries pointed at the built ones (verify checks that every command exists and
/// is executable). Ok only if it exits 0 *and* says nothing about these units: it reports unknown keys,
/// bad values and unknown system call groups as warnings ("…, ignoring") with exit status 0, and systemd
/// would run such a unit without the setting.
fn verify(units: &[(&str, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = bin("ringway-controlplane")
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap();
    let mut paths = Vec::new();
    for (name, text) in units {
        let path = dir.path().join(name);
        let text = text.replace(INSTALL_PREFIX, &format!("{}/ringway-", bin_dir.display()));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&paths)
        .output()
        .map_err(|e| {
            format!(
                "cannot run systemd-analyze (Debian package systemd; tools/test installs it): {e}"
            )
        })?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let dir_text = dir.path().display().to_string();
    let about_ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains(&dir_text) || line.contains("ringway"))
        .collect();
    if output.status.success() && about_ours.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify: {} and said:\n{said}",
            output.status
        ))
    }
}

fn shipped_units() -> Vec<(&'static str, String)> {
    UNITS.iter().map(|name| (*name, unit_text(name))).collect()
}

#[test]
fn both_units_pass_systemd_analyze_verify() {
    verify(&shipped_units()).unwrap();
}

/// The check above is only worth something if it fails on a broken unit: each breakage here must be caught.
#[test]
fn verification_catches_broken_units() {
    let breakages: [(&str, &str, &str); 5] = [
        (
            "a misspelt key",
            "\nType=notify\n",
            "\nType=notify\nRestartSecs=1s\n",
        ),
        (
            "a system call group that does not exist",
            "\nSystemCallFilter=~@privileged\n",
            "\nSystemCallFilter=~@privileged @io_uring\n",
        ),
        (
            "a binary that is not installed",
            "\nExecStart=/usr/local/bin/ringway-dataplane\n",
            "\nExecStart=/usr/local/bin/ringway-dataplane-missing\n",
        ),
        (
            "a bad value",
            "\nProtectSystem=strict\n",
            "\nProtectSystem=very\n",
        ),
        (
            "a dependency on a unit that does not exist",
            "\nWants=ringway-controlplane.service\n",
            "\nRequires=ringway-controlplane.service ringway-nonexistent.service\n",
        ),
    ];
    for (what, from, to) in breakages {
        let mut units = shipped_units();
        assert!(
            units[1].1.contains(from),
            "{what}: {from:?} not in the unit"
        );
        units[1].1 = units[1].1.replacen(from, to, 1);
        assert!(
            verify(&units).is_err(),
            "{what} ({to:?}) passed verification"
        );
    }
}

/// `[Section]` → key → values, in order (keys may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    sections
}

fn one<'a>(
    unit: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>,
    section: &str,
    key: &str,
) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("[{section}] {key}= missing"));
    assert_eq!(values.len(), 1, "[{section}] {key}= set more than once");
    &values[0]
}

/// The decisions the units encode (see the comments in them), so a later edit cannot quietly undo one.
#[test]
fn units_keep_their_design() {
    let controlplane = parse_unit(&unit_text(UNITS[0]));
    let dataplane = parse_unit(&unit_text(UNITS[1]));
    for (name, unit) in [("controlplane", &controlplane), ("dataplane", &dataplane)] {
        let service = "Service";
        assert_eq!(one(unit, service, "Type"), "notify", "{name}");
        assert_eq!(one(unit, service, "User"), "ringway", "{name}");
        assert_eq!(one(unit, service, "Restart"), "on-failure", "{name}");
        assert_eq!(
            one(unit, service, "EnvironmentFile"),
            "-/etc/ringway/ringway.env",
            "{name}"
        );
        assert_eq!(one(unit, service, "RuntimeDirectory"), "ringway", "{name}");
        assert_eq!(
            one(unit, service, "RuntimeDirectoryPreserve"),
            "yes",
            "{name}: stopping one unit must not delete the other's socket"
        );
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
            ("SystemCallArchitectures", "native"),
        ] {
            assert_eq!(one(unit, service, key), value, "{name} {key}");
        }
        assert!(
            unit[service]["SystemCallFilter"][0].starts_with("@system-service"),
            "{name}"
        );
        assert!(
            one(unit, service, "ExecStart").starts_with(INSTALL_PREFIX),
            "{name}"
        );
    }

    // The dataplane keeps serving when the controlplane stops: wanted and ordered, never required.
    let unit = &dataplane["Unit"];
    assert!(
        unit["Wants"]
            .iter()
            .any(|v| v.contains("ringway-controlplane.service"))
    );
    assert!(
        unit["After"]
            .iter()
            .any(|v| v.contains("ringway-controlplane.service"))
    );
    for key in ["Requires", "BindsTo", "PartOf", "Requisite"] {
        assert!(
            !unit
                .get(key)
                .is_some_and(|v| v.iter().any(|v| v.contains("controlplane"))),
            "{key}= would take the dataplane down with the controlplane"
        );
    }
    // Zero-drop upgrade: the takeover process becomes the main process through MAINPID=.
    assert_eq!(one(&dataplane, "Service", "NotifyAccess"), "all");
    let reload = one(&dataplane, "Service", "ExecReload");
    assert!(
        reload.starts_with("/usr/local/bin/ringway-dataplane ")
            && reload.contains("--takeover")
            && reload.contains("--detach"),
        "{reload}"
    );
    assert_eq!(one(&dataplane, "Service", "KillMode"), "control-group");
    // After a reload the main process is not systemd's child, and systemd would SIGKILL it on stop
    // instead of waiting: ExecStop= asks it to drain and waits for it.
    let stop = one(&dataplane, "Service", "ExecStop");
    assert!(
        stop.contains("kill -TERM") && stop.contains("$$MAINPID") && stop.contains("while kill -0"),
        "{stop}"
    );
    let filter = dataplane["Service"]["SystemCallFilter"].join(" ");
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(
            filter.split(' ').any(|c| c == call),
            "{call} not allowed: {filter}"
        );
    }
    assert!(
        !filter.contains("~@resources"),
        "workers pin themselves (sched_setaffinity)"
    );
    assert_eq!(
        one(&dataplane, "Service", "AmbientCapabilities"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(
        one(&dataplane, "Service", "CapabilityBoundingSet"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(one(&dataplane, "Service", "StateDirectory"), "ringway");
    assert!(one(&dataplane, "Service", "LimitMEMLOCK").ends_with('M'));
    assert!(
        one(&dataplane, "Service", "LimitNOFILE")
            .parse::<u64>()
            .unwrap()
            >= 65536
    );
    // Stopping takes the drain grace (5 s) plus the drain timeout (30 s) by default.
    let stop = one(&dataplane, "Service", "TimeoutStopSec");
    let seconds: u64 = stop.trim_end_matches('s').parse().unwrap();
    assert!(
        seconds > 35,
        "TimeoutStopSec={stop} would SIGKILL a draining dataplane"
    );
    // The controlplane needs no capability.
    assert_eq!(one(&controlplane, "Service", "CapabilityBoundingSet"), "");
}

#[test]
fn the_sysusers_snippet_creates_the_ringway_user() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let snippet = repo()
        .join("tools/systemd/ringway.sysusers")
        .canonicalize()
        .unwrap();
    let output = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("--root={}", root.path().display()))
        .arg(&snippet)
        .output()
        .expect("systemd-sysusers (Debian package systemd)");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("Creating user 'ringway'"), "{said}");
}

// ---- the environment file ----

/// `NAME` of each `#NAME=value` / `NAME=value` line, with the comment line above it.
fn env_file_entries() -> Vec<(String, String)> {
    let text = read("tools/systemd/ringway.env");
    let lines: Vec<&str> = text.lines().collect();
    let mut entries = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let assignment = line.trim_start_matches('#');
        let Some((name, _)) = assignment.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let comment = if i > 0 { lines[i - 1] } else { "" };
        entries.push((name.to_string(), comment.to_string()));
    }
    entries
}

#[test]
fn the_environment_file_documents_every_variable_of_both_binaries() {
    let entries = env_file_entries();
    let documented: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let mut known: Vec<String> = help::variables("ringway-controlplane");
    known.extend(help::variables("ringway-dataplane"));
    known.push("RUST_LOG".into());

    let missing: Vec<&String> = known
        .iter()
        .filter(|v| !documented.contains(&v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in tools/systemd/ringway.env: {missing:?}"
    );
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|v| !known.iter().any(|k| k == *v))
        .collect();
    assert!(unknown.is_empty(), "no binary reads: {unknown:?}");
    let mut unique = documented.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), documented.len(), "a variable listed twice");
    for (name, comment) in &entries {
        assert!(
            comment.starts_with("# ") && comment.len() > 10,
            "{name} has no comment line above it"
        );
    }
    // Commented-out defaults: the file changes nothing until edited.
    let text = read("tools/systemd/ringway.env");
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "every line is a comment"
    );
}
