//! Start-up checks a host operator meets first.

use std::process::Command;

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

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    for (binary, vars) in [
        (
            "ringway-dataplane",
            &[
                "RINGWAY_SOCKET",
                "RINGWAY_WORKERS",
                "RINGWAY_STATE_FILE",
                "RINGWAY_FORWARD",
                "RINGWAY_DRAIN_TIMEOUT",
            ][..],
        ),
        (
            "ringway-controlplane",
            &[
                "RINGWAY_SERVICES",
                "RINGWAY_SOCKET",
                "GROUP_SIZE",
                "MAX_CONNECTIONS",
            ][..],
        ),
    ] {
        let output = Command::new(bin(binary)).arg("--help").output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for var in vars {
            assert!(help.contains(var), "{binary} --help does not mention {var}");
        }
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
