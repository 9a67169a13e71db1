//! Backend choice: weights, least-connections, per-backend limits divided by the group size, the queue.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ringway_tests::net::{connect, free_port};
use ringway_tests::{Harness, NamedBackend, Service, read_name, wait_until};

#[test]
fn weights_100_200_700_hold_within_5_percent_over_1000_connections() {
    let backends = [
        NamedBackend::start("light"),
        NamedBackend::start("medium"),
        NamedBackend::start("heavy"),
    ];
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("weighted", port)
            .weighted(backends[0].port(), 100)
            .weighted(backends[1].port(), 200)
            .weighted(backends[2].port(), 700)],
        &[],
        &[],
    );
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let counts = counts.clone();
            thread::spawn(move || {
                for _ in 0..250 {
                    let mut stream = connect(port).unwrap();
                    let name = read_name(&mut stream).unwrap();
                    *counts.lock().unwrap().entry(name).or_default() += 1;
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let counts = counts.lock().unwrap();
    for (name, weight) in [("light", 100usize), ("medium", 200), ("heavy", 700)] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            got.abs_diff(weight) <= 50,
            "{name}: {got} of 1000 connections, expected {weight} ± 50; all: {counts:?}"
        );
    }
}

#[test]
fn least_conn_sends_new_connections_to_the_idle_backend() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let port = free_port();
    let mut h = Harness::start(
        &[Service::new("lc", port)
            .balance("least-conn")
            .backend(a.port())
            .backend(b.port())],
        &[],
        &[],
    );
    let admin = h.dataplane.admin_address();
    let mut held = connect(port).unwrap();
    let busy = read_name(&mut held).unwrap();
    let (idle_name, idle) = if busy == "a" { ("b", &b) } else { ("a", &a) };
    let idle_address = ringway_tests::net::local(idle.port()).to_string();
    for i in 0..10 {
        let mut stream = connect(port).unwrap();
        assert_eq!(
            read_name(&mut stream).unwrap(),
            idle_name,
            "connection {i} went to the busy backend"
        );
        drop(stream);
        // Wait until the dataplane itself counts the idle backend as idle again.
        assert!(wait_until(Duration::from_secs(5), || {
            let stats = ringway_tests::http::stats(admin);
            stats["services"][0]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["address"] == idle_address.as_str() && b["connections"] == 0)
        }));
    }
    drop(held);
}

#[test]
fn maxconn_divided_by_group_size_is_never_exceeded_and_queued_clients_are_served() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let port = free_port();
    // maxconn 4 across a group of 2 Ringway instances: this one may open 2 per backend.
    let _h = Harness::start(
        &[Service::new("limited", port)
            .maxconn(4)
            .backend(a.port())
            .backend(b.port())],
        &["--group-size", "2"],
        &[],
    );
    let clients: Vec<_> = (0..20)
        .map(|_| {
            thread::spawn(move || -> Result<String, String> {
                let mut stream = connect(port).map_err(|e| e.to_string())?;
                let name = read_name(&mut stream).map_err(|e| format!("not served: {e}"))?;
                thread::sleep(Duration::from_millis(200));
                Ok(name)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        served, 20,
        "every queued client is served when slots free up: {results:?}"
    );
    assert!(
        a.counters().peak() <= 2,
        "backend a saw {} concurrent connections",
        a.counters().peak()
    );
    assert!(
        b.counters().peak() <= 2,
        "backend b saw {} concurrent connections",
        b.counters().peak()
    );
    assert_eq!(a.counters().accepted() + b.counters().accepted(), 20);
}

#[test]
fn a_full_queue_times_out_and_closes_the_client() {
    let only = NamedBackend::start("only");
    let port = free_port();
    let _h = Harness::start(
        &[Service::new("one", port)
            .maxconn(1)
            .backend(only.port())
            .extra("timeout_queue_ms = 300")],
        &[],
        &[],
    );
    let mut holder = connect(port).unwrap();
    assert_eq!(read_name(&mut holder).unwrap(), "only");
    let mut waiter = connect(port).unwrap();
    let mut buf = Vec::new();
    let result = waiter.read_to_end(&mut buf);
    assert!(
        buf.is_empty(),
        "the queued client was never connected: {buf:?} {result:?}"
    );
    assert_eq!(only.counters().peak(), 1);
    drop(holder);
    assert!(wait_until(Duration::from_secs(5), || only
        .counters()
        .active()
        == 0));
    let mut next = connect(port).unwrap();
    assert_eq!(
        read_name(&mut next).unwrap(),
        "only",
        "a freed slot serves the next client"
    );
}

#[test]
fn round_robin_goes_on_while_other_services_change() {
    let a = NamedBackend::start("a");
    let b = NamedBackend::start("b");
    let other = NamedBackend::start("other");
    let (port, other_port) = (free_port(), free_port());
    let steady = Service::new("steady", port)
        .backend(a.port())
        .backend(b.port());
    let mut h = Harness::start(
        &[steady.clone(), Service::new("busy", other_port)],
        &[],
        &[],
    );
    // Discovery churn elsewhere in the cluster (here: another service gaining and losing its backend)
    // must not restart this service's rotation; if it did, every connection would go to one backend.
    const CONNECTIONS: usize = 20;
    let mut counts = HashMap::<String, usize>::new();
    for i in 0..CONNECTIONS {
        let busy = if i % 2 == 0 {
            Service::new("busy", other_port).backend(other.port())
        } else {
            Service::new("busy", other_port)
        };
        h.reconfigure(&[steady.clone(), busy]);
        let mut stream = connect(port).unwrap();
        *counts.entry(read_name(&mut stream).unwrap()).or_default() += 1;
    }
    // Each of the 2 workers alternates between the two: at most one extra pick per worker.
    for name in ["a", "b"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            got >= CONNECTIONS / 2 - 2,
            "{name} got {got} of {CONNECTIONS} connections while another service changed: {counts:?}"
        );
    }
}
