use std::net::IpAddr;

use super::entries::{CheckRow, HealthEntry, catalog, hosts};
use super::*;
use crate::model::Catalog;
use crate::sources::checks::Note;

const HEALTH: &str = include_str!("../../../../tests/fixtures/consul/health_service_redis.json");
const SERVICES: &str = include_str!("../../../../tests/fixtures/consul/catalog_services.json");

fn documented() -> Vec<HealthEntry> {
    serde_json::from_str(HEALTH).unwrap()
}

/// The catalog of `known` (addresses are IPs here), and what was noted.
fn build(known: &[(&str, Vec<HealthEntry>)], options: &DiscoveryOptions) -> (Catalog, Vec<Note>) {
    let known: BTreeMap<String, Vec<HealthEntry>> = known
        .iter()
        .map(|(n, e)| (n.to_string(), e.clone()))
        .collect();
    let hosts: BTreeMap<String, IpAddr> = hosts(known.values())
        .into_iter()
        .filter_map(|h| h.parse().ok().map(|ip| (h, ip)))
        .collect();
    let mut notes = Notes::new(SOURCE);
    let catalog = catalog(known.iter(), &hosts, options, &mut notes);
    (catalog, notes.reported().cloned().collect())
}

#[test]
fn the_index_resets_when_it_goes_backwards_and_is_never_zero_otherwise() {
    assert_eq!(next_index(0, 0), 1, "clamped");
    assert_eq!(next_index(0, 12), 12);
    assert_eq!(next_index(12, 12), 12);
    assert_eq!(next_index(12, 15), 15);
    assert_eq!(next_index(15, 7), 0, "backwards: start over");
    assert!(watch::blocking_timeout() > WAIT + WAIT / 16);
}

#[test]
fn the_documented_responses_parse() {
    let services: BTreeMap<String, Vec<String>> = serde_json::from_str(SERVICES).unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        vec!["consul", "postgresql", "redis"]
    );
    let entries = documented();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].address(), "10.1.10.12");
    assert_eq!(entries[0].node.node, "foobar");
    assert_eq!(entries[0].service.port, 8000);
    assert_eq!(entries[0].checks.len(), 2);
    // /v1/health/state/any rows: the same check objects, flat.
    let rows: Vec<CheckRow> = serde_json::from_value(serde_json::json!([
        {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
         "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": [],
         "Namespace": "default"},
        {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check", "Status": "passing",
         "Notes": "", "Output": "", "ServiceID": "redis", "ServiceName": "redis", "ServiceTags": ["primary"],
         "Namespace": "default", "CreateIndex": 10, "ModifyIndex": 12}
    ]))
    .unwrap();
    assert_eq!(
        (rows[1].service_name.as_str(), rows[1].node.as_str()),
        ("redis", "foobar")
    );
}

#[test]
fn a_redis_with_a_service_port_tag_is_routed_and_addresses_fall_back_to_the_node() {
    let mut entries = documented();
    entries[0].service.tags = Some(vec![
        "primary".into(),
        "ringway.servicePort=6379".into(),
        "ringway.maxconn=50".into(),
    ]);
    let mut second = entries[0].clone();
    second.service.id = "redis-2".into();
    second.service.address = String::new();
    second.node.address = "10.1.10.13".into();
    second.service.tags = Some(vec![
        "ringway.servicePort=6379".into(),
        "ringway.weight=7".into(),
    ]);
    entries.push(second);
    let (catalog, _) = build(&[("redis", entries)], &DiscoveryOptions::default());
    assert_eq!(catalog.services.len(), 1);
    let s = &catalog.services[0];
    assert_eq!(
        (s.name.as_str(), s.listen.port(), s.maxconn),
        ("redis", 6379, Some(50))
    );
    let instances: Vec<(String, u16)> = s
        .instances
        .iter()
        .map(|i| (i.address.to_string(), i.weight))
        .collect();
    assert_eq!(
        instances,
        vec![
            ("10.1.10.12:8000".into(), 500),
            ("10.1.10.13:8000".into(), 7)
        ]
    );
}

#[test]
fn untagged_failing_badly_labelled_and_port_0_entries_are_not_routed() {
    let options = DiscoveryOptions::default();
    assert!(
        build(&[("redis", documented())], &options)
            .0
            .services
            .is_empty(),
        "no service port"
    );
    let mut critical = documented();
    critical[0].checks[1].status = "critical".into();
    assert!(
        build(&[("redis@6379", critical)], &options)
            .0
            .services
            .is_empty(),
        "serfHealth critical"
    );
    let mut bad = documented();
    bad[0].service.tags = Some(vec!["ringway.maxconn=-3".into()]);
    let mut zero = documented();
    zero[0].service.id = "zero".into();
    zero[0].service.port = 0;
    let mut redis = documented();
    redis.extend(zero);
    let (catalog, notes) = build(&[("redis@6379", redis), ("bad@6380", bad)], &options);
    let names: Vec<(&str, usize)> = catalog
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.instances.len()))
        .collect();
    assert_eq!(
        names,
        vec![("redis", 1)],
        "maxconn=-3 skips only its own service; port 0 only its own entry"
    );
    let noted: Vec<String> = notes.iter().map(ToString::to_string).collect();
    assert_eq!(
        noted,
        vec![
            "service redis entry zero: Service.Port=\"10.1.10.12:0\": 0 is not a port".to_string(),
            "app redis port 0: label ringway.maxconn=\"-3\": must not be negative; this port is not routed"
                .to_string(),
        ]
    );
}

#[test]
fn meta_gives_settings_in_any_case_tags_win_and_groups_filter() {
    let mut entries = documented();
    // registrator lowercases the attributes it puts in Meta.
    entries[0].service.meta = Some(
        [
            ("ringway.serviceport".to_string(), "7000".to_string()),
            ("ringway.weight".into(), "9".into()),
            ("haproxy_group".into(), "external".into()),
        ]
        .into(),
    );
    let (catalog, _) = build(&[("redis", entries.clone())], &DiscoveryOptions::default());
    assert_eq!(catalog.services[0].listen.port(), 7000);
    assert_eq!(catalog.services[0].instances[0].weight, 9);
    let external = DiscoveryOptions {
        groups: vec!["external".into()],
        ..DiscoveryOptions::default()
    };
    assert_eq!(
        build(&[("redis", entries.clone())], &external)
            .0
            .services
            .len(),
        1
    );
    entries[0].service.tags = Some(vec![
        "ringway.weight=11".into(),
        "HAPROXY_GROUP=internal".into(),
    ]);
    let (catalog, _) = build(&[("redis", entries.clone())], &DiscoveryOptions::default());
    assert_eq!(catalog.services[0].instances[0].weight, 11, "tags win");
    assert!(
        build(&[("redis", entries)], &external)
            .0
            .services
            .is_empty()
    );
}

fn answer<T>(value: T, index_moved: bool, body_changed: bool) -> Answer<T> {
    Answer {
        value,
        index_moved,
        body_changed,
        refresh: false,
    }
}

fn listing(names: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    names
        .iter()
        .map(|(n, tags)| (n.to_string(), tags.iter().map(|t| t.to_string()).collect()))
        .collect()
}

fn entry_on(node: &str) -> HealthEntry {
    let mut e = documented().remove(0);
    e.node.node = node.into();
    e
}

fn check(node: &str, service: &str, status: &str) -> CheckRow {
    CheckRow {
        node: node.into(),
        check_id: if service.is_empty() {
            "serfHealth".into()
        } else {
            format!("service:{service}")
        },
        status: status.into(),
        service_id: service.into(),
        service_name: service.into(),
    }
}

/// Reads everything queued, answering each with one entry on `node`.
fn read_all(state: &mut State, node: &str) -> Vec<String> {
    let names: Vec<String> = std::mem::take(&mut state.queue).into_iter().collect();
    for name in &names {
        state.in_flight.insert(name.clone());
        state.on_read(name.clone(), Ok(vec![entry_on(node)]));
    }
    names
}

#[test]
fn only_the_services_a_change_touches_are_read() {
    let mut state = State::default();
    state.on_services(answer(
        listing(&[("a", &[]), ("b", &[]), ("c", &[])]),
        true,
        true,
    ));
    assert!(!state.settled());
    assert_eq!(
        read_all(&mut state, "n1"),
        vec!["a", "b", "c"],
        "first listing"
    );
    assert!(state.settled() && state.changed);
    state.changed = false;
    state.on_checks(answer(
        vec![check("n1", "a", "passing"), check("n1", "", "passing")],
        true,
        true,
    ));
    assert!(
        state.queue.is_empty(),
        "the first checks only set the baseline"
    );

    // A tag change, a new service, a removed one.
    state.on_services(answer(
        listing(&[("a", &["x"]), ("b", &[]), ("d", &[])]),
        true,
        true,
    ));
    assert!(state.changed, "c is gone");
    assert!(!state.known.contains_key("c"));
    assert_eq!(read_all(&mut state, "n1"), vec!["a", "d"]);

    // One service's check flips: only it is read.
    state.on_checks(answer(
        vec![check("n1", "a", "critical"), check("n1", "", "passing")],
        true,
        true,
    ));
    assert_eq!(read_all(&mut state, "n1"), vec!["a"]);
    // A node check flips: every service with an instance on that node.
    state.known.get_mut("b").unwrap().entries = Some(vec![entry_on("n2")]);
    state.on_checks(answer(
        vec![check("n1", "a", "critical"), check("n1", "", "critical")],
        true,
        true,
    ));
    assert_eq!(read_all(&mut state, "n1"), vec!["a", "d"]);

    // The catalog's index moved, its body did not: a registration nobody can see; read everything.
    state.on_services(answer(
        listing(&[("a", &["x"]), ("b", &[]), ("d", &[])]),
        true,
        false,
    ));
    assert_eq!(read_all(&mut state, "n1"), vec!["a", "b", "d"]);
    // A timeout with nothing new reads nothing.
    state.on_services(answer(
        listing(&[("a", &["x"]), ("b", &[]), ("d", &[])]),
        false,
        false,
    ));
    assert!(state.queue.is_empty());
}

#[test]
fn a_change_during_a_read_reads_again_and_a_failed_read_keeps_the_last_entries() {
    let mut state = State::default();
    state.on_services(answer(listing(&[("a", &[])]), true, true));
    read_all(&mut state, "n1");
    state.changed = false;
    state.want("a");
    let name = state.queue.pop_first().unwrap();
    state.in_flight.insert(name.clone());
    state.want("a");
    assert!(state.queue.is_empty() && state.again.contains("a"));
    let error = ConsulError::Status {
        url: "http://c/v1/health/service/a".into(),
        status: reqwest::StatusCode::INTERNAL_SERVER_ERROR,
    };
    state.on_read(name, Err(error));
    assert!(
        state.queue.contains("a"),
        "changed while in flight: read again"
    );
    assert!(state.has_failed_reads() && state.changed);
    assert_eq!(state.entries().count(), 1, "the last good entries stay");
    assert_eq!(state.errors().len(), 1);
    read_all(&mut state, "n1");
    assert!(!state.has_failed_reads());
    assert!(state.errors().is_empty());
}

#[test]
fn service_names_become_one_path_segment() {
    assert_eq!(path_segment("web@8080"), "web@8080");
    assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
}
