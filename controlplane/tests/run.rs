//! The whole controlplane through `run_until`: start-up errors, and a file change reaching a dataplane.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{FakeDataplane, runtime, services_toml, web_weight};
use ringway_controlplane::{Config, run_until};
use ringway_shared::wire::Message;
use tokio::sync::oneshot;

fn config(dir: &Path) -> Config {
    let mut config = Config::new(Some(dir.join("services.toml")));
    config.socket = dir.join("control.sock");
    config
}

fn start_error(config: Config) -> String {
    let rt = runtime();
    let err = rt
        .block_on(run_until(config, std::future::pending()))
        .expect_err("start-up should fail");
    format!("{err:#}")
}

#[test]
fn no_source_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.services = None;
    let err = start_error(config);
    assert!(err.contains("no discovery source configured"), "{err}");
    assert!(err.contains("--services"), "{err}");
}

#[test]
fn a_bad_services_file_is_a_start_up_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), services_toml(1001)).unwrap();
    let err = start_error(config(dir.path()));
    assert!(err.contains("services.toml:5:"), "{err}");
    assert!(
        err.contains("backends[0].weight: 1001 is outside 1..=1000"),
        "{err}"
    );
    assert!(
        !dir.path().join("control.sock").exists(),
        "nothing is served"
    );

    let err = start_error(config(&dir.path().join("missing")));
    assert!(err.contains("cannot read services file"), "{err}");
}

#[test]
fn a_changed_file_reaches_the_dataplane_with_a_higher_version_and_shutdown_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.toml");
    std::fs::write(&file, services_toml(10)).unwrap();
    let config = config(dir.path());
    let socket = config.socket.clone();

    let rt = runtime();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = rt.spawn(run_until(config, async {
        let _ = stopped.await;
    }));
    common::wait_until("the socket to appear", || socket.exists());

    let mut dp = FakeDataplane::connect(&socket, "dp-run");
    let theirs = dp.hello(0, 0);
    let first = dp.recv_snapshot();
    assert_eq!(first.version, theirs.applied_version);
    assert_eq!(web_weight(&first), 10);
    // maxconn 10 with group size 1.
    assert_eq!(
        first.cluster("web").unwrap().backends[0].max_connections,
        Some(10)
    );
    dp.send(&Message::ack(first.version));

    std::fs::write(&file, services_toml(20)).unwrap();
    let second = dp.recv_snapshot();
    assert!(second.version > first.version);
    assert_eq!(web_weight(&second), 20);

    stop.send(()).unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("run_until did not return")
            .unwrap()
            .unwrap();
    });
    assert!(!socket.exists(), "the socket is removed at shutdown");
    assert_eq!(dp.expect_closed(), vec![]);
}
