//! Start-up checks a host operator meets first.

use std::process::Command;

use ringway_tests::help;
use ringway_tests::procs::bin;

/// With too little locked memory for its rings, the dataplane refuses to start and says how to fix it.
/// Root bypasses RLIMIT_MEMLOCK (CAP_IPC_LOCK), so as root the check runs as `nobody`.
#[test]
fn too_little_locked_memory_is_explained() {
    let dataplane = bin("ringway-dataplane");
    let mut command = Command::new("prlimit");
    command.arg("--memlock=0:0");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        command = Command::new("setpriv");
        command.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            "prlimit",
            "--memlock=0:0",
        ]);
    }
    let output = command
        .arg(&dataplane)
        .args(["--socket", "/nonexistent/ringway.sock", "--state-file", ""])
        .output()
        .expect("prlimit/setpriv (util-linux) are installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started despite memlock 0: {stderr}"
    );
    assert!(
        stderr.contains("RLIMIT_MEMLOCK") && stderr.contains("LimitMEMLOCK="),
        "{stderr}"
    );
}

/// `--help` of both binaries lists every flag, and every flag names its environment variable, which is
/// how systemd environment files and containers configure Ringway (tools/systemd/ringway.env).
#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    for (binary, expected) in [
        (
            "ringway-dataplane",
            &[
                ("--socket", "RINGWAY_SOCKET"),
                ("--workers", "RINGWAY_WORKERS"),
                ("--state-file", "RINGWAY_STATE_FILE"),
                ("--forward", "RINGWAY_FORWARD"),
                ("--drain-timeout", "RINGWAY_DRAIN_TIMEOUT"),
                ("--drain-grace", "RINGWAY_DRAIN_GRACE"),
                ("--status-endpoint", "STATUS_ENDPOINT"),
            ][..],
        ),
        (
            "ringway-controlplane",
            &[
                ("--services", "RINGWAY_SERVICES"),
                ("--socket", "RINGWAY_SOCKET"),
                ("--group-size", "GROUP_SIZE"),
                ("--max-connections", "MAX_CONNECTIONS"),
                ("--spawn-dataplane", "RINGWAY_SPAWN_DATAPLANE"),
                ("--dataplane-bin", "RINGWAY_DATAPLANE_BIN"),
                ("--dataplane-args", "RINGWAY_DATAPLANE_ARGS"),
            ][..],
        ),
    ] {
        let options = help::options(binary);
        // The parse found the options it must (a format change would otherwise pass vacuously).
        for (flag, var) in expected {
            let option = options
                .iter()
                .find(|o| o.flag == *flag)
                .unwrap_or_else(|| panic!("{binary} --help does not list {flag}: {options:#?}"));
            assert_eq!(option.env.as_deref(), Some(*var), "{binary} {flag}");
        }
        let missing: Vec<&str> = options
            .iter()
            .filter(|o| o.env.is_none() && o.flag != "--help" && o.flag != "--version")
            .map(|o| o.text.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "{binary}: flags without an environment variable:\n{}",
            missing.join("\n")
        );
        let mut variables: Vec<&str> = options.iter().filter_map(|o| o.env.as_deref()).collect();
        variables.sort_unstable();
        let count = variables.len();
        variables.dedup();
        assert_eq!(count, variables.len(), "{binary}: a variable used twice");
    }
}

#[test]
fn group_size_zero_is_refused_at_start() {
    let output = Command::new(bin("ringway-controlplane"))
        .args([
            "--services",
            "/nonexistent.toml",
            "--group-size",
            "0",
            "--socket",
            "/tmp/never.sock",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("group-size"));
}
