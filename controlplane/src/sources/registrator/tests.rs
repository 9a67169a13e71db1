use super::*;

const GET: &str = include_str!("../../../../tests/fixtures/etcd/registrator_get.json");

fn catalog_of(body: &str, options: &DiscoveryOptions) -> Catalog {
    catalog_and_notes(body, options).0
}

fn catalog_and_notes(body: &str, options: &DiscoveryOptions) -> (Catalog, Vec<String>) {
    let response: Response = serde_json::from_str(body).unwrap();
    let mut notes = Notes::new("registrator");
    let entries = entries(&response.node, &mut notes);
    let hosts = entries
        .iter()
        .filter_map(|e| e.host.parse().ok().map(|ip| (e.host.clone(), ip)))
        .collect();
    let catalog = build(&entries, &hosts, options, &mut notes);
    (catalog, notes.reported().map(ToString::to_string).collect())
}

#[test]
fn the_documented_tree_gives_db_on_the_exposed_port() {
    let catalog = catalog_of(GET, &DiscoveryOptions::default());
    assert_eq!(catalog.services.len(), 1);
    let s = &catalog.services[0];
    assert_eq!((s.name.as_str(), s.listen.port()), ("db", 6379));
    assert_eq!(
        s.instances[0].address,
        "192.168.1.102:10000".parse().unwrap()
    );
}

#[test]
fn name_port_suffix_udp_ipv6_host_networking_and_bad_keys() {
    let body = r#"{"node":{"key":"/services","dir":true,"nodes":[
      {"key":"/services/web@8080","dir":true,"nodes":[
        {"key":"/services/web@8080/h1:web.0:80","value":"10.0.0.1:31000"},
        {"key":"/services/web@8080/h1:web.1:80","value":"[::1]:31001"},
        {"key":"/services/web@8080/h1:web.2:80:udp","value":"10.0.0.1:31002"},
        {"key":"/services/web@8080/customid","value":"10.0.0.1:31003"},
        {"key":"/services/web@8080/h1:web.3:80","value":"garbage"},
        {"key":"/services/web@8080/h1:web.4:80","value":"10.0.0.1:0"}]},
      {"key":"/services/hostnet","dir":true,"nodes":[
        {"key":"/services/hostnet/h1:h.0:9000","value":"127.0.0.1:9000"}]},
      {"key":"/services/internal","dir":true,"nodes":[
        {"key":"/services/internal/h1:i.0:9001","value":"203.0.113.7:9001"}]},
      {"key":"/services/empty","dir":true}]}}"#;
    let mut options = DiscoveryOptions::default();
    let (catalog, notes) = catalog_and_notes(body, &options);
    let names: Vec<(&str, u16)> = catalog
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.listen.port()))
        .collect();
    // registrator -internal: the container's own address on the exposed port is no host networking.
    assert_eq!(
        names,
        vec![("internal", 9001), ("web", 8080)],
        "{catalog:?}"
    );
    let web = &catalog.services[1];
    let addrs: Vec<String> = web
        .instances
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    assert_eq!(addrs, vec!["10.0.0.1:31000", "[::1]:31001"]);
    assert_eq!(
        notes,
        vec![
            "service web entry /services/web@8080/customid: key=\"customid\": the ID is not host:container:port",
            "service web entry /services/web@8080/h1:web.3:80: value=\"garbage\": not host:port",
            "service web entry /services/web@8080/h1:web.4:80: value=\"10.0.0.1:0\": 0 is not a port",
            "service hostnet port 9000: 127.0.0.1:9000 is on this host",
        ]
    );
    options.expose_host = true;
    assert_eq!(
        catalog_of(body, &options).services.len(),
        3,
        "host networking exposed"
    );
}

#[test]
fn urls_parse_like_registrators_with_several_members_and_tls() {
    let u = RegistratorUrl::parse("etcd://127.0.0.1:2379/services").unwrap();
    assert_eq!(
        (u.bases.clone(), u.path.as_str()),
        (vec!["http://127.0.0.1:2379".to_string()], "/services")
    );
    assert_eq!(
        u.keys_url(&u.bases[0]),
        "http://127.0.0.1:2379/v2/keys/services"
    );
    let root = RegistratorUrl::parse("etcd://h:1").unwrap();
    assert_eq!(root.keys_url(&root.bases[0]), "http://h:1/v2/keys");
    let several = RegistratorUrl::parse("etcd+https://e1:2379, e2:2379/services/").unwrap();
    assert_eq!(several.bases, vec!["https://e1:2379", "https://e2:2379"]);
    assert_eq!(several.path, "/services");
    for bad in [
        "http://h:1/x",
        "etcd:///x",
        "etcd://a,/x",
        "etcd://u:p@h:1/x",
    ] {
        let err = RegistratorUrl::parse(bad).unwrap_err().to_string();
        assert!(err.contains("etcd+https://"), "{bad}: {err}");
    }
}

#[test]
fn error_bodies_are_recognised() {
    let cleared = br#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1008/8]","index":2007}"#;
    assert_eq!(error_code(cleared), Some(EVENT_INDEX_CLEARED));
    let missing = br#"{"cause":"/foo","errorCode":100,"index":6,"message":"Key not found"}"#;
    assert_eq!(error_code(missing), Some(KEY_NOT_FOUND));
    assert_eq!(error_code(b""), None);
    assert_eq!(error_code(br#"{"action":"set"}"#), None);
}
