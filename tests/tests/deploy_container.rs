//! What ships for containers: the Dockerfile and `.dockerignore` (parsed and checked against the tree, for
//! both builds: the one in the Rust image a user with a registry runs, which no test can run here, and the
//! prebuilt one, which deploy_docker.rs also builds and runs), and the image's health check script (run
//! against a real dataplane).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringway_tests::fake_controlplane::FakeControlplane;
use ringway_tests::net::free_port;
use ringway_tests::{Dataplane, EchoBackend, Harness, Service, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---- the container image ----

/// Dockerfile instructions, continuation lines joined, comments and parser directives dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, arguments) = pending.split_once(' ').unwrap_or((&pending, ""));
        instructions.push((keyword.to_uppercase(), arguments.trim().to_string()));
        pending.clear();
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    instructions
}

/// `ARG NAME=default` values, substituted into `text`.
fn substitute_args(instructions: &[(String, String)], text: &str) -> String {
    let mut out = text.to_string();
    for (keyword, arguments) in instructions {
        if keyword == "ARG"
            && let Some((name, value)) = arguments.split_once('=')
        {
            out = out.replace(&format!("${{{name}}}"), value);
        }
    }
    out
}

fn json_array(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments).unwrap_or_else(|e| panic!("not a JSON array: {arguments}: {e}"))
}

/// `.dockerignore` decides per path: the last matching pattern wins, `!` re-includes, a pattern also
/// matches everything below a directory it names. Enough of Docker's rules for the patterns used here.
fn docker_excludes(path: &str) -> bool {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut excluded = false;
    for pattern in &patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        let pattern = pattern.trim_end_matches('/');
        let components: Vec<&str> = path.split('/').collect();
        let matches = (1..=components.len()).any(|n| {
            let prefix = components[..n].join("/");
            glob(pattern, &prefix)
        });
        if matches {
            excluded = !negated;
        }
    }
    excluded
}

/// `*` within one path component, `**` across components.
fn glob(pattern: &str, path: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("**/") {
        let components: Vec<&str> = path.split('/').collect();
        return (0..components.len()).any(|i| glob(rest, &components[i..].join("/")));
    }
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    let path_parts: Vec<&str> = path.split('/').collect();
    pattern_parts.len() == path_parts.len()
        && pattern_parts
            .iter()
            .zip(&path_parts)
            .all(|(p, s)| component_glob(p.as_bytes(), s.as_bytes()))
}

fn component_glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| component_glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && component_glob(rest, &text[1..]),
    }
}

#[test]
fn the_dockerfile_builds_both_binaries_into_a_slim_non_root_image() {
    let instructions = dockerfile();
    let all = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| substitute_args(&instructions, a))
            .collect()
    };
    let from = all("FROM");
    assert_eq!(
        from.len(),
        4,
        "builder, prebuilt, the stage selecting one of them, runtime: {from:?}"
    );
    // Builder: the official rust image, at least the workspace's rust-version, on the runtime's release.
    let (image, stage) = from[0].split_once(" AS ").expect("a named builder stage");
    assert_eq!(stage.trim(), "builder");
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("builder is not the official rust image: {image}"));
    let version = |text: &str| -> (u32, u32) {
        let mut parts = text
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    let minimum = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("workspace rust-version");
    assert!(
        version(tag) >= version(&minimum),
        "rust:{tag} is older than rust-version {minimum}"
    );
    assert!(tag.ends_with("bookworm"), "builder on bookworm: {tag}");
    // The binaries come from the builder unless the build says BINARIES=prebuilt: the host's, copied
    // from the build context into an otherwise empty stage.
    assert_eq!(from[1], "scratch AS prebuilt");
    assert_eq!(from[2], "builder AS binaries", "the default is the builder");
    assert_eq!(from[3], "debian:bookworm-slim");
    let copies = all("COPY");
    assert!(
        copies.contains(
            &"target/release/ringway-controlplane target/release/ringway-dataplane /out/".into()
        ),
        "the prebuilt stage takes target/release's binaries by default: {copies:?}"
    );
    // The build and what the runtime stage takes from it.
    let run = all("RUN").join("\n");
    assert!(run.contains("cargo build --release"), "{run}");
    for package in ["ringway-controlplane", "ringway-dataplane"] {
        assert!(run.contains(&format!("-p {package}")), "{package} is built");
        assert!(
            run.contains(&format!("target/release/{package}")),
            "{package} is copied out of the cached target directory"
        );
    }
    let into_runtime: Vec<&String> = copies.iter().filter(|c| c.starts_with("--from=")).collect();
    assert_eq!(into_runtime.len(), 1);
    assert!(
        into_runtime[0].starts_with("--from=binaries ")
            && into_runtime[0].contains("/out/ringway-controlplane")
            && into_runtime[0].contains("/out/ringway-dataplane"),
        "{into_runtime:?}"
    );
    // Runtime: non-root, the supervisor as entrypoint, SIGTERM, sane defaults.
    let user = all("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("root") && !user[0].starts_with("0"),
        "runs as {}",
        user[0]
    );
    assert_eq!(
        json_array(&all("ENTRYPOINT")[0]),
        ["ringway-controlplane", "--spawn-dataplane"]
    );
    assert_eq!(all("STOPSIGNAL"), ["SIGTERM"]);
    assert!(!all("EXPOSE").is_empty());
    let env = all("ENV").join(" ");
    for variable in [
        "RINGWAY_SERVICES=/etc/ringway/services.toml",
        "RINGWAY_SOCKET=/run/ringway/control.sock",
        "RINGWAY_STATE_FILE=/var/lib/ringway/dataplane.snapshot",
        "STATUS_ENDPOINT=",
    ] {
        assert!(env.contains(variable), "ENV {variable}");
    }
    let healthcheck = all("HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1);
    let command = healthcheck[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK CMD")
        .1;
    assert_eq!(json_array(command), ["ringway-healthcheck"]);
    assert!(
        copies
            .iter()
            .any(|c| c == "tools/docker/healthcheck /usr/local/bin/ringway-healthcheck"),
        "{copies:?}"
    );
    assert!(
        copies
            .iter()
            .any(|c| c == "examples/services.toml /etc/ringway/services.toml"),
        "the example services file is the default: {copies:?}"
    );
}

/// Every file the Dockerfile copies from the build context exists and is not excluded by
/// `.dockerignore`; every workspace member is in the context (cargo needs them all to load the
/// workspace); and the bulk (target/, .git) stays out.
#[test]
fn every_copied_path_exists_and_reaches_the_build_context() {
    let instructions = dockerfile();
    let mut sources = Vec::new();
    for (keyword, arguments) in &instructions {
        if keyword != "COPY" || arguments.starts_with("--from=") {
            continue;
        }
        let arguments = substitute_args(&instructions, arguments);
        let parts: Vec<&str> = arguments
            .split_whitespace()
            .filter(|p| !p.starts_with("--"))
            .collect();
        assert!(parts.len() >= 2, "COPY {arguments}");
        sources.extend(parts[..parts.len() - 1].iter().map(|s| s.to_string()));
    }
    assert!(sources.len() >= 8, "{sources:?}");
    for source in &sources {
        // The prebuilt binaries exist once built (target/release by default, target/debug for the
        // tests); they must reach the context either way.
        if let Some(binary) = source.strip_prefix("target/release/") {
            let debug = format!("target/debug/{binary}");
            assert!(
                !docker_excludes(&debug),
                "{debug}: excluded by .dockerignore"
            );
        } else {
            assert!(repo().join(source).exists(), "COPY {source}: no such path");
        }
        assert!(
            !docker_excludes(source),
            "COPY {source}: excluded by .dockerignore"
        );
    }
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    for member in json_array(members) {
        assert!(
            sources.contains(&member),
            "workspace member {member} is not copied into the builder"
        );
        assert!(
            !docker_excludes(&format!("{member}/Cargo.toml")),
            "{member}"
        );
        assert!(
            !docker_excludes(&format!("{member}/src/lib.rs")),
            "{member}"
        );
    }
    for bulky in [
        "target",
        "target/debug/deps/libringway_shared.rlib",
        "target/debug/ringway-demo-backend",
        "target/release/build",
        "target/container-cache/debian.tar",
        ".git",
        "tools/demo",
        "docs/operations.md",
    ] {
        assert!(
            docker_excludes(bulky),
            "{bulky} is sent to the Docker daemon"
        );
    }
    assert!(
        docker_excludes("controlplane/target/x"),
        "nested target directories"
    );
}

// ---- the image's health check script, against a real dataplane ----

fn healthcheck(endpoint: &str) -> (bool, String) {
    let output = Command::new("bash")
        .arg(repo().join("tools/docker/healthcheck"))
        .env("STATUS_ENDPOINT", endpoint)
        .output()
        .expect("bash");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn the_health_check_is_healthy_only_while_the_dataplane_serves() {
    // Before the first snapshot: 503 INITIALIZING.
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeControlplane::bind(&dir.path().join("cp.sock"));
    let mut waiting = Dataplane::start(dir.path(), &fake.path, &[]);
    let admin = waiting.admin_address();
    let (healthy, said) = healthcheck(&admin.to_string());
    assert!(!healthy && said.contains(" 503 "), "{said}");
    drop(waiting);

    // Serving: 200.
    let echo = EchoBackend::start();
    let port = free_port();
    let admin_port = free_port();
    let h = Harness::start(
        &[Service::new("echo", port).backend(echo.port())],
        &[],
        &[
            "--status-endpoint",
            &format!("127.0.0.1:{admin_port}"),
            "--drain-grace",
            "5s",
        ],
    );
    // A wildcard endpoint (the image's default, 0.0.0.0:9090) is checked on loopback; the dataplane
    // itself stays on loopback, as every test does.
    let (healthy, said) = healthcheck(&format!("0.0.0.0:{admin_port}"));
    assert!(healthy, "{said}");
    assert!(said.contains(" 200 "), "{said}");

    // Draining: unhealthy.
    h.dataplane.proc.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || !healthcheck(&format!(
            "127.0.0.1:{admin_port}"
        ))
        .0),
        "still healthy while DRAINING"
    );

    // Nothing listening, or the endpoint disabled.
    let (healthy, said) = healthcheck(&format!("127.0.0.1:{}", free_port()));
    assert!(!healthy && said.contains("nothing answers"), "{said}");
    let (healthy, said) = healthcheck("");
    assert!(!healthy && said.contains("disabled"), "{said}");
}
