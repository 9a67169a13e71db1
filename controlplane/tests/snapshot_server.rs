//! The snapshot server driven by fake dataplanes over a real Unix socket in a temporary directory.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeDataplane, Harness, QUIET_PING, catalog, web_weight};
use ringway_controlplane::pipeline::publisher::Publisher;
use ringway_controlplane::serve::peer_auth::effective_uid;
use ringway_controlplane::serve::registry::{DataplaneRegistry, Nack};
use ringway_controlplane::serve::snapshot_server::{ServerError, ServerOptions, SnapshotServer};
use ringway_shared::wire::{Hello, Message, PROTOCOL_VERSION, Role};

#[test]
fn hello_gets_hello_and_the_current_snapshot() {
    let h = Harness::start(QUIET_PING);
    let v1 = h.publish(&catalog(10));
    let mut dp = h.connect("dp-1");
    let theirs = dp.hello(0, 0);
    assert_eq!(theirs.protocol_version, PROTOCOL_VERSION);
    assert_eq!(theirs.applied_version, v1);
    let snapshot = dp.recv_snapshot();
    assert_eq!(snapshot.version, v1);
    assert_eq!(theirs.applied_hash, snapshot.hash);
    assert_eq!(web_weight(&snapshot), 10);
    snapshot.validate().unwrap();
}

#[test]
fn identical_content_is_not_resent_but_changes_are_pushed() {
    let h = Harness::start(QUIET_PING);
    let v1 = h.publish(&catalog(10));
    let mut dp = h.connect("dp-1");
    dp.hello(0, 0);
    assert_eq!(dp.recv_snapshot().version, v1);

    // The same content again: the publisher refuses, and the session sends nothing. The barrier shows that
    // nothing arrived before the pong.
    assert!(matches!(
        h.publisher.publish(&catalog(10)).unwrap(),
        ringway_controlplane::pipeline::publisher::PublishOutcome::Unchanged { .. }
    ));
    assert_eq!(dp.round_trip(1), vec![]);

    // Different content: pushed, under a higher version, and the very next message.
    let v2 = h.publish(&catalog(20));
    let pushed = dp.recv_snapshot();
    assert!(pushed.version > v1);
    assert_eq!(pushed.version, v2);
    assert_eq!(web_weight(&pushed), 20);
}

#[test]
fn an_up_to_date_dataplane_gets_no_snapshot() {
    let h = Harness::start(QUIET_PING);
    h.publish(&catalog(10));
    let current = h.publisher.current().unwrap();
    let mut dp = h.connect("dp-1");
    let theirs = dp.hello(current.version(), current.hash());
    assert_eq!(theirs.applied_version, current.version());
    // A snapshot would be sent right after the hello, so before the pong.
    assert_eq!(dp.round_trip(7), vec![]);
    // Still subscribed: the next publish arrives.
    let v2 = h.publish(&catalog(11));
    assert_eq!(dp.recv_snapshot().version, v2);
}

#[test]
fn a_dataplane_with_an_older_version_or_other_content_gets_the_snapshot() {
    let h = Harness::start(QUIET_PING);
    let v1 = h.publish(&catalog(10));
    let hash = h.publisher.current().unwrap().hash();

    let mut older = h.connect("older");
    older.hello(v1 - 1, hash);
    assert_eq!(older.recv_snapshot().version, v1);

    // Ahead of us with other content (it outlived a controlplane whose clock ran ahead): the content is
    // re-issued above its version.
    let ahead = v1 + 1_000_000_000;
    let mut dp = h.connect("ahead");
    dp.hello(ahead, hash ^ 1);
    let snapshot = dp.recv_snapshot();
    assert!(snapshot.version > ahead);
    assert_eq!(snapshot.hash, hash);
    // Every session sees the re-issued version.
    assert_eq!(older.recv_snapshot().version, snapshot.version);
}

#[test]
fn acks_and_nacks_are_recorded_in_the_registry() {
    let h = Harness::start(QUIET_PING);
    let v1 = h.publish(&catalog(10));
    let mut dp = h.connect("dp-acks");
    dp.hello(0, 0);
    dp.recv_snapshot();
    dp.send(&Message::ack(v1));
    let v2 = h.publish(&catalog(20));
    assert_eq!(dp.recv_snapshot().version, v2);
    dp.send(&Message::Nack {
        version: v2,
        reason: "listener 127.0.0.1:18080: address in use".into(),
    });
    dp.round_trip(3);

    let all = h.registry.dataplanes();
    let info = all.iter().find(|d| d.name == "dp-acks").unwrap();
    assert_eq!(info.last_ack, Some(v1));
    assert_eq!(
        info.last_nack,
        Some(Nack {
            version: v2,
            reason: "listener 127.0.0.1:18080: address in use".into()
        })
    );
    assert_eq!(info.last_sent, Some(v2));
    assert_eq!(info.hello_version, 0);
    assert_eq!(info.uid, effective_uid());
    assert_eq!(info.pid, Some(std::process::id() as i32));

    drop(dp);
    common::wait_until("the session to leave the registry", || {
        h.registry.dataplanes().iter().all(|d| d.name != "dp-acks")
    });
}

#[test]
fn garbage_closes_that_session_only() {
    let h = Harness::start(QUIET_PING);
    h.publish(&catalog(10));
    let mut good = h.connect("good");
    good.hello(0, 0);
    good.recv_snapshot();

    let cases: [(&str, &[u8]); 3] = [
        (
            "garbage payload",
            &[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("oversized length", &[0xff, 0xff, 0xff, 0xff]),
        ("empty frame", &[0, 0, 0, 0]),
    ];
    for (what, bytes) in cases {
        let mut bad = h.connect(what);
        bad.hello(0, 0);
        bad.recv_snapshot();
        bad.stream.write_all(bytes).unwrap();
        assert_eq!(bad.expect_closed(), vec![], "{what}");
    }

    // Truncated: half a frame, then the write side closes.
    let mut cut = h.connect("truncated");
    cut.hello(0, 0);
    cut.recv_snapshot();
    cut.stream.write_all(&[0, 0, 0, 9, 1]).unwrap();
    cut.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(cut.expect_closed(), vec![]);

    // Garbage instead of a hello.
    let mut early = h.connect("garbage-first");
    early.stream.write_all(&[0, 0, 0, 2, 0xfe, 0xfe]).unwrap();
    assert_eq!(early.expect_closed(), vec![]);

    // The good session still gets snapshots, and new sessions are still accepted.
    let v2 = h.publish(&catalog(20));
    assert_eq!(good.recv_snapshot().version, v2);
    let mut later = h.connect("later");
    later.hello(0, 0);
    assert_eq!(later.recv_snapshot().version, v2);
}

#[test]
fn protocol_mismatch_closes_without_a_reply() {
    let h = Harness::start(QUIET_PING);
    h.publish(&catalog(10));
    let mut dp = h.connect("future");
    let mut hello = Hello::new(Role::Dataplane, "future", 0, 0);
    hello.protocol_version = PROTOCOL_VERSION + 1;
    dp.send(&Message::Hello(hello));
    assert_eq!(
        dp.expect_closed(),
        vec![],
        "nothing may be sent to a peer of another protocol"
    );
}

#[test]
fn a_peer_claiming_to_be_a_controlplane_or_skipping_hello_is_closed() {
    let h = Harness::start(QUIET_PING);
    h.publish(&catalog(10));
    let mut dp = h.connect("impostor");
    dp.send(&Message::Hello(Hello::new(
        Role::Controlplane,
        "impostor",
        0,
        0,
    )));
    assert_eq!(dp.expect_closed(), vec![]);
    let mut dp = h.connect("rude");
    dp.send(&Message::ack(1));
    assert_eq!(dp.expect_closed(), vec![]);
    // A second hello mid-session is a protocol error too.
    let mut dp = h.connect("twice");
    dp.hello(0, 0);
    dp.recv_snapshot();
    dp.send(&Message::Hello(Hello::new(Role::Dataplane, "twice", 0, 0)));
    assert_eq!(dp.expect_closed(), vec![]);
}

#[test]
fn before_the_first_snapshot_the_hello_says_zero_and_the_first_publish_follows() {
    let h = Harness::start(QUIET_PING);
    let mut dp = h.connect("early");
    let theirs = dp.hello(0, 0);
    assert_eq!((theirs.applied_version, theirs.applied_hash), (0, 0));
    assert_eq!(dp.round_trip(1), vec![]);
    let v1 = h.publish(&catalog(10));
    assert_eq!(dp.recv_snapshot().version, v1);
}

#[test]
fn pings_are_sent_and_a_silent_dataplane_is_dropped() {
    let h = Harness::start(Duration::from_millis(40));
    h.publish(&catalog(10));

    // Answering every ping keeps the session open well past three intervals.
    let mut lively = h.connect("lively");
    lively.hello(0, 0);
    lively.recv_snapshot();
    for _ in 0..10 {
        match lively.recv() {
            Message::Ping { nonce } => lively.send(&Message::Pong { nonce }),
            other => panic!("expected a ping, got {other:?}"),
        }
    }

    // Saying nothing gets the session closed.
    let mut silent = h.connect("silent");
    silent.hello(0, 0);
    silent.recv_snapshot();
    assert_eq!(silent.expect_closed(), vec![]);
}

#[test]
fn socket_is_0660_and_removed_at_shutdown() {
    let mut h = Harness::start(QUIET_PING);
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut dp = h.connect("dp");
    dp.hello(0, 0);
    h.stop();
    assert!(!h.socket.exists());
    assert_eq!(dp.expect_closed(), vec![]);
}

fn bind(h: &Harness) -> Result<SnapshotServer, ServerError> {
    h.runtime.block_on(SnapshotServer::bind(
        ServerOptions {
            socket: h.socket.clone(),
            allow_uids: Vec::new(),
            ping_interval: QUIET_PING,
        },
        Arc::new(Publisher::new(common::settings())),
        DataplaneRegistry::new(),
    ))
}

#[test]
fn a_served_socket_is_not_taken_over() {
    let h = Harness::start(QUIET_PING);
    let err = bind(&h).unwrap_err();
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    assert!(err.to_string().contains("another controlplane is serving"));
    // The first server is unaffected.
    let mut dp = h.connect("dp");
    dp.hello(0, 0);
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_not() {
    let mut h = Harness::start(QUIET_PING);
    h.stop();
    // A socket nobody listens on, as a crashed controlplane leaves it.
    drop(std::os::unix::net::UnixListener::bind(&h.socket).unwrap());
    assert!(h.socket.exists());
    let server = bind(&h).unwrap();
    assert!(
        FakeDataplane::connect(server.path(), "probe")
            .stream
            .peer_addr()
            .is_ok()
    );
    drop(server);
    assert!(!h.socket.exists(), "dropping the server removes its socket");

    std::fs::write(&h.socket, "not a socket").unwrap();
    let err = bind(&h).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&h.socket).unwrap(), "not a socket");
}
