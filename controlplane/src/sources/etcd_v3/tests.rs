use super::*;
use crate::model::SourceId;
use crate::pipeline::intake::catalog_channel;
use crate::sources::SourceRegistry;

const RANGE: &str = include_str!("../../../../tests/fixtures/etcd/v3_range.json");
const WATCH: &str = include_str!("../../../../tests/fixtures/etcd/v3_watch.jsonl");

fn source(prefix: &str) -> EtcdV3 {
    let (sink, _updates) = catalog_channel();
    let handle = SourceRegistry::new().handle(SourceId::new("etcd-v3"), sink);
    EtcdV3::new(
        "http://127.0.0.1:2379/".into(),
        prefix.into(),
        DiscoveryOptions::default(),
        handle,
    )
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

    for (key, value) in [
        ("web", r#"{"address":"10.0.0.5:1"}"#),
        ("web/a", r#"{"address":"10.0.0.5"}"#),
        ("web/a", r#"{"address":"10.0.0.5:1","weight":0}"#),
        ("web/a", r#"{"address":"10.0.0.5:1","colour":"red"}"#),
        ("web/a", r#"{"address":"#),
    ] {
        assert!(parse_entry(key, value).is_err(), "{key} = {value}");
    }
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
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let catalog = s.catalog(&kvs).await;
    assert_eq!(catalog.services.len(), 1, "{catalog:?}");
    let web = &catalog.services[0];
    assert_eq!(
        (web.name.as_str(), web.listen.port(), web.maxconn),
        ("web", 8080, Some(50))
    );
    let instances: Vec<(u16, u16, Option<u32>)> = web
        .instances
        .iter()
        .map(|i| (i.address.port(), i.weight, i.maxconn))
        .collect();
    assert_eq!(instances, vec![(31000, 500, None), (31001, 7, None)]);
}
