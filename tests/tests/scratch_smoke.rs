use std::io::{Read, Write};
use std::time::Duration;

use ringway_shared::{Backend, BackendState, Balance, Cluster, Listener, Protocol, Snapshot, Timeouts};
use ringway_tests::fake_controlplane::FakeControlplane;
use ringway_tests::*;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let echo = EchoBackend::start();
    let port = free_port();
    let fake = FakeControlplane::bind(&dir.path().join("cp.sock"));
    let mut dp = Dataplane::start(dir.path(), &fake.path, &[]);
    let mut session = fake.accept();
    let snapshot = Snapshot::new(
        1,
        vec![Listener { name: "e".into(), address: net::local(port), protocol: Protocol::Tcp, cluster: "e".into() }],
        vec![Cluster {
            name: "e".into(),
            balance: Balance::RoundRobin,
            timeouts: Timeouts::default(),
            max_connections: 100,
            backends: vec![Backend { address: net::local(echo.port()), weight: 500, max_connections: None, state: BackendState::Active }],
        }],
    )
    .unwrap();
    session.send(&snapshot);
    println!("{:?}", session.reply());
    dp.wait_applied(1);
    let mut s = net::connect(port).unwrap();
    s.write_all(b"hello").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"hello");
    std::thread::sleep(Duration::from_millis(100));
    println!("{}", dp.proc.log_text());
}
