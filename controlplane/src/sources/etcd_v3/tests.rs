use super::*;
use crate::model::SourceId;
use crate::pipeline::intake::catalog_channel;
use crate::sources::SourceRegistry;
use ringway_shared::BackendState;

const RANGE: &str = include_str!("../../../../tests/fixtures/etcd/v3_range.json");
const WATCH: &str = include_str!("../../../../tests/fixtures/etcd/v3_watch.jsonl");

fn source(prefix: &str) -> EtcdV3 {
    source_at("http://127.0.0.1:2379/", prefix)
}

fn source_at(url: &str, prefix: &str) -> EtcdV3 {
    let (sink, _updates) = catalog_channel();
    let handle = SourceRegistry::new().handle(SourceId::new("etcd-v3"), sink);
    let config = EtcdV3Config {
        endpoints: vec![url.into()],
        prefix: prefix.into(),
        tls: TlsFiles::none("etcd"),
    };
    EtcdV3::new(config, DiscoveryOptions::default(), handle).unwrap()
}

#[tokio::test]
async fn a_watch_on_a_member_that_never_answers_gives_up_after_the_set_up_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let mut s = source_at(&url, "/p");
    s.setup_timeout = Duration::from_millis(300);
    let mut kvs = BTreeMap::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.watch(&mut kvs, 1))
        .await
        .expect("the set-up is bounded");
    assert!(
        matches!(ended, Err(EtcdV3Error::WatchSetup { .. })),
        "{:?}",
        ended.err()
    );
    held.abort();
}

#[test]
fn the_documented_range_and_watch_lines_decode() {
    let range: RangeResponse = serde_json::from_str(RANGE).unwrap();
    assert_eq!(range.header.revision, "2");
    assert_eq!(
        decode(&range.kvs[0]).unwrap(),
        ("foo".to_string(), "bar".to_string())
    );

    let s = source("/x");
    let mut kvs = BTreeMap::new();
    for line in WATCH.lines() {
        assert!(s.apply_line(line.as_bytes(), &mut kvs).unwrap().is_none());
        if kvs.contains_key("foo") {
            assert_eq!(kvs["foo"], "bar", "a PUT has no type field");
        }
    }
    assert!(kvs.is_empty(), "the DELETE (no value) removed the key");
}

#[test]
fn canceled_or_compacted_watches_resync_and_errors_fail() {
    let s = source("/x");
    let mut kvs = BTreeMap::new();
    let compacted =
        br#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"5"}}"#;
    assert!(matches!(
        s.apply_line(compacted, &mut kvs),
        Ok(Some(WatchEnd::Resync))
    ));
    let error = br#"{"error":{"grpc_code":14,"message":"unavailable"}}"#;
    assert!(s.apply_line(error, &mut kvs).is_err());
    assert!(s.apply_line(b"{not json", &mut kvs).is_err());
}

#[test]
fn the_key_range_covers_the_prefix() {
    let s = source("/ringway/services/");
    let r = s.key_range();
    let key = BASE64.decode(r["key"].as_str().unwrap()).unwrap();
    let end = BASE64.decode(r["range_end"].as_str().unwrap()).unwrap();
    assert_eq!(key, b"/ringway/services/");
    assert_eq!(end, b"/ringway/services0");
}

#[test]
fn entries_in_the_documented_format() {
    let e = parse_entry(
        "web/host1-31000",
        r#"{"address":"10.0.0.5:31000","port":8080,"weight":100,"labels":{"ringway.maxconn":"50"}}"#,
    )
    .unwrap();
    assert_eq!(
        (e.service.as_str(), e.listen_port, e.port, e.weight),
        ("web", Some(8080), 31000, Some(100))
    );
    assert_eq!(e.labels["ringway.maxconn"], "50");

    let plain = parse_entry("db@6379/a", "192.168.1.102:10000").unwrap();
    assert_eq!(
        (
            plain.service.as_str(),
            plain.listen_port,
            plain.host.as_str()
        ),
        ("db", Some(6379), "192.168.1.102")
    );

    for (key, value, field) in [
        ("web", r#"{"address":"10.0.0.5:1"}"#, "key"),
        ("web/a", r#"{"address":"10.0.0.5"}"#, "address"),
        ("web/a", r#"{"address":"10.0.0.5:0"}"#, "address"),
        (
            "web/a",
            r#"{"address":"10.0.0.5:1","weight":1001}"#,
            "weight",
        ),
        ("web/a", r#"{"address":"10.0.0.5:1","port":0}"#, "port"),
        (
            "web/a",
            r#"{"address":"10.0.0.5:1","colour":"red"}"#,
            "value",
        ),
        ("web/a", r#"{"address":"#, "value"),
    ] {
        let error = parse_entry(key, value).unwrap_err();
        assert_eq!(error.0, field, "{key} = {value}: {error:?}");
    }
    let drained = parse_entry("web/a", r#"{"address":"10.0.0.5:1","port":80,"weight":0}"#);
    assert_eq!(drained.unwrap().weight, Some(0), "weight 0 drains");
}

#[tokio::test]
async fn the_catalog_applies_labels_and_skips_bad_entries() {
    let s = source("/p");
    let kvs: BTreeMap<String, String> = [
        (
            "/p/web/a",
            r#"{"address":"127.0.0.1:31000","port":8080,"labels":{"ringway.maxconn":"50"}}"#,
        ),
        (
            "/p/web/b",
            r#"{"address":"127.0.0.1:31001","port":8080,"weight":7}"#,
        ),
        (
            "/p/bad/a",
            r#"{"address":"127.0.0.1:31002","port":8081,"labels":{"ringway.maxconn":"-3"}}"#,
        ),
        ("/p/noport/a", r#"{"address":"127.0.0.1:31003"}"#),
        ("/p/junk/a", "not json {"),
        ("/p/web/zero", r#"{"address":"127.0.0.1:0","port":8080}"#),
        (
            "/p/web/drained",
            r#"{"address":"127.0.0.1:31004","port":8080,"weight":0}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (catalog, degraded) = s.catalog(&kvs).await;
    assert_eq!(degraded, None);
    assert_eq!(catalog.services.len(), 1, "{catalog:?}");
    let web = &catalog.services[0];
    assert_eq!(
        (web.name.as_str(), web.listen.port(), web.maxconn),
        ("web", 8080, Some(50))
    );
    let instances: Vec<(u16, u16, Option<u32>, BackendState)> = web
        .instances
        .iter()
        .map(|i| (i.address.port(), i.weight, i.maxconn, i.state))
        .collect();
    assert_eq!(
        instances,
        vec![
            (31000, 500, None, BackendState::Active),
            (31001, 7, None, BackendState::Active),
            (31004, 500, None, BackendState::Draining),
        ]
    );
    let notes = s.notes.lock().unwrap();
    let noted: Vec<String> = notes.reported().map(ToString::to_string).collect();
    assert_eq!(noted.len(), 4, "{noted:#?}");
    for expected in [
        "app bad/a port 0: label ringway.maxconn=\"-3\"",
        "service junk entry junk/a: address=\"not json {\": not host:port",
        "service noport entry noport/a: port=\"\": no listen port",
        "service web entry web/zero: address=\"127.0.0.1:0\": 0 is not a port",
    ] {
        assert!(
            noted.iter().any(|n| n.starts_with(expected)),
            "{expected} not in {noted:#?}"
        );
    }
}
