use super::*;
use crate::model::SourceId;
use crate::pipeline::intake::catalog_channel;
use crate::sources::SourceRegistry;

const HEALTH: &str = include_str!("../../../../tests/fixtures/consul/health_service_redis.json");
const SERVICES: &str = include_str!("../../../../tests/fixtures/consul/catalog_services.json");

fn source(options: DiscoveryOptions) -> Consul {
    let (sink, _updates) = catalog_channel();
    let handle = SourceRegistry::new().handle(SourceId::new("consul"), sink);
    Consul::new("http://127.0.0.1:8500/".into(), options, handle)
}

fn known(name: &str, entries: Vec<HealthEntry>) -> BTreeMap<String, Known> {
    [(
        name.to_string(),
        Known {
            entries: Some(entries),
            error: None,
        },
    )]
    .into_iter()
    .collect()
}

fn documented() -> Vec<HealthEntry> {
    serde_json::from_str(HEALTH).unwrap()
}

#[test]
fn the_index_resets_when_it_goes_backwards_and_is_never_zero_otherwise() {
    assert_eq!(next_index(0, 0), 1, "clamped");
    assert_eq!(next_index(0, 12), 12);
    assert_eq!(next_index(12, 12), 12);
    assert_eq!(next_index(12, 15), 15);
    assert_eq!(next_index(15, 7), 0, "backwards: start over");
    assert!(read_timeout() > WAIT + WAIT / 16);
}

#[test]
fn the_documented_responses_parse() {
    let services: BTreeMap<String, Value> = serde_json::from_str(SERVICES).unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        vec!["consul", "postgresql", "redis"]
    );
    let entries = documented();
    assert_eq!(entries.len(), 1);
    assert_eq!(address_of(&entries[0]), "10.1.10.12");
    assert_eq!(entries[0].service.port, 8000);
    assert_eq!(entries[0].checks.len(), 2);
}

#[tokio::test]
async fn a_redis_with_a_service_port_tag_is_routed_and_addresses_fall_back_to_the_node() {
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
    let catalog = source(DiscoveryOptions::default())
        .catalog(&known("redis", entries))
        .await;
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

#[tokio::test]
async fn untagged_failing_and_badly_labelled_entries_are_not_routed() {
    let s = source(DiscoveryOptions::default());
    assert!(
        s.catalog(&known("redis", documented()))
            .await
            .services
            .is_empty(),
        "no service port"
    );
    let mut critical = documented();
    critical[0].checks[1].status = "critical".into();
    assert!(
        s.catalog(&known("redis@6379", critical))
            .await
            .services
            .is_empty(),
        "serfHealth critical"
    );
    let mut bad = documented();
    bad[0].service.tags = Some(vec!["ringway.maxconn=-3".into()]);
    let mut all = known("redis@6379", documented());
    all.extend(known("bad@6380", bad));
    let catalog = s.catalog(&all).await;
    let names: Vec<&str> = catalog.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["redis"],
        "maxconn=-3 skips only its own service"
    );
}

#[tokio::test]
async fn meta_gives_settings_tags_win_and_groups_filter() {
    let mut entries = documented();
    entries[0].service.meta = Some(
        [
            ("ringway.servicePort".to_string(), "7000".to_string()),
            ("ringway.weight".into(), "9".into()),
        ]
        .into(),
    );
    entries[0].service.tags = Some(vec![
        "ringway.weight=11".into(),
        "HAPROXY_GROUP=internal".into(),
    ]);
    let catalog = source(DiscoveryOptions::default())
        .catalog(&known("redis", entries.clone()))
        .await;
    assert_eq!(catalog.services[0].listen.port(), 7000);
    assert_eq!(catalog.services[0].instances[0].weight, 11);
    let external = DiscoveryOptions {
        groups: vec!["external".into()],
        ..DiscoveryOptions::default()
    };
    assert!(
        source(external)
            .catalog(&known("redis", entries))
            .await
            .services
            .is_empty()
    );
}
