//! The intake loop ([`run`]): merging, coalescing, the first snapshot, and answers to API changes.

use std::sync::Arc;
use std::time::Duration;

use ringway_shared::{BackendState, Snapshot};

use super::*;
use crate::model::Catalog;
use crate::pipeline::overrides::{AdminState, BackendOverride, ServiceRef};
use crate::pipeline::publisher::tests::{catalog, publisher};

fn update(source: &str, catalog: Catalog) -> Input {
    Input::Catalog {
        update: CatalogUpdate {
            source: SourceId::new(source),
            catalog,
        },
        reply: None,
    }
}

fn on_port(mut c: Catalog, name: &str, port: u16) -> Catalog {
    c.services[0].name = name.into();
    c.services[0].listen.set_port(port);
    c
}

#[tokio::test(start_paused = true)]
async fn sources_merge_bursts_coalesce_and_a_silent_source_keeps_its_catalog() {
    let p = Arc::new(publisher());
    let (tx, rx) = catalog_channel();
    let expected = vec![SourceId::new("consul"), SourceId::new("marathon")];
    let task = tokio::spawn(run(Arc::clone(&p), rx, expected, Coalescing::default()));

    // One source alone does not publish while the other may still answer.
    tx.send(update("marathon", on_port(catalog(1), "m", 1001)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(p.current().is_none(), "waiting for consul");

    // A burst: only the last of marathon's catalogs counts, and one snapshot comes out.
    tx.send(update("consul", on_port(catalog(1), "c", 1002)))
        .await
        .unwrap();
    for w in 2..=50 {
        tx.send(update("marathon", on_port(catalog(w), "m", 1001)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = p.current().expect("published once both answered");
    assert_eq!(first.snapshot.listeners.len(), 2);
    assert_eq!(web_weight(&first.snapshot, "m"), 50);

    // Consul goes silent (a failing source sends nothing): its services stay.
    tx.send(update("marathon", on_port(catalog(60), "m", 1001)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = p.current().unwrap();
    assert!(second.version() > first.version());
    assert_eq!(web_weight(&second.snapshot, "c"), 1);
    assert_eq!(web_weight(&second.snapshot, "m"), 60);

    // The same content again publishes nothing.
    tx.send(update("marathon", on_port(catalog(60), "m", 1001)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.current().unwrap().version(), second.version());
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_the_initial_sync_timeout_what_answered_is_published() {
    let p = Arc::new(publisher());
    let (tx, rx) = catalog_channel();
    let expected = vec![SourceId::new("consul"), SourceId::new("marathon")];
    let coalescing = Coalescing::new(Duration::from_millis(5), Duration::from_secs(3));
    tokio::spawn(run(Arc::clone(&p), rx, expected, coalescing));
    tx.send(update("marathon", catalog(1))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(p.current().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.current().unwrap().snapshot.listeners.len(), 1);
}

fn web_weight(snapshot: &Snapshot, name: &str) -> u16 {
    snapshot.cluster(name).unwrap().backends[0].weight
}

#[tokio::test(start_paused = true)]
async fn api_changes_are_answered_with_the_snapshot_that_carries_them() {
    let p = Arc::new(publisher());
    let (tx, rx) = catalog_channel();
    let expected = vec![SourceId::new("file"), SourceId::new("api")];
    tokio::spawn(run(Arc::clone(&p), rx, expected, Coalescing::default()));
    tx.send(update("file", catalog(1))).await.unwrap();

    // The API's own catalog waits for the first snapshot, then learns its version.
    let asked = {
        let tx = tx.clone();
        tokio::spawn(async move {
            submit(&tx, |reply| Input::Catalog {
                update: CatalogUpdate {
                    source: SourceId::new("api"),
                    catalog: on_port(catalog(1), "dfp", 2000),
                },
                reply: Some(reply),
            })
            .await
        })
    };
    let applied = asked.await.unwrap().unwrap();
    let first = p.current().unwrap();
    assert_eq!(
        applied,
        Applied {
            version: Some(first.version()),
            changed: true
        }
    );
    assert_eq!(first.snapshot.listeners.len(), 2);

    // An edit produces one snapshot, and the same edit again none.
    let edit = |reply| Input::Edit {
        edit: Edit::Set {
            service: ServiceRef::Name("web".into()),
            backend: "127.0.0.1:19001".parse().unwrap(),
            value: BackendOverride {
                state: Some(AdminState::Drain),
                weight: None,
            },
        },
        reply,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = submit(&tx, edit).await.unwrap();
    let second = p.current().unwrap();
    assert_eq!(
        applied,
        Applied {
            version: Some(second.version()),
            changed: true
        }
    );
    assert!(second.version() > first.version());
    assert_eq!(
        second.snapshot.cluster("web").unwrap().backends[0].state,
        BackendState::Draining
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = submit(&tx, edit).await.unwrap();
    assert_eq!(
        again,
        Applied {
            version: Some(second.version()),
            changed: false
        }
    );

    // A source's new catalog keeps the override.
    tx.send(update("file", catalog(3))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let third = p.current().unwrap();
    let backend = &third.snapshot.cluster("web").unwrap().backends[0];
    assert_eq!((backend.weight, backend.state), (3, BackendState::Draining));

    // A refused edit is answered at once and publishes nothing.
    let refused = submit(&tx, |reply| Input::Edit {
        edit: Edit::ClearSwitch {
            service: ServiceRef::Name("web".into()),
        },
        reply,
    })
    .await
    .unwrap_err();
    assert_eq!(refused.to_string(), "service: \"web\" has no switch");
    assert_eq!(p.current().unwrap().version(), third.version());
}

#[tokio::test]
async fn a_stopped_publisher_answers_stopped() {
    let (tx, rx) = catalog_channel();
    drop(rx);
    let err = submit(&tx, |reply| Input::Edit {
        edit: Edit::ClearSwitch {
            service: ServiceRef::Name("web".into()),
        },
        reply,
    })
    .await
    .unwrap_err();
    assert_eq!(err, ApplyError::Stopped);
}
