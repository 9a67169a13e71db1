use super::*;
use crate::model::ServiceMode;

const ZDD_APPS: &str = include_str!("../../../../../tests/fixtures/marathon/zdd_apps.json");
const MARATHON15_APPS: &str =
    include_str!("../../../../../tests/fixtures/marathon/marathon15_apps.json");
const PROXYMATIC_APP_VERSION: &str = include_str!(
    "../../../../../tests/fixtures/marathon/proxymatic_testLoadBalancerOptions_app_version.json"
);

fn options(groups: &[&str]) -> DiscoveryOptions {
    DiscoveryOptions {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..DiscoveryOptions::default()
    }
}

fn build(body: &str, options: &DiscoveryOptions) -> Catalog {
    read(body, options, &mut Routed::default())
}

/// One read after the reads that left `routed`.
fn read(body: &str, options: &DiscoveryOptions, routed: &mut Routed) -> Catalog {
    let mut notes = Notes::new("marathon");
    let apps = parse_apps(body.as_bytes(), &mut notes).unwrap();
    let hosts = hosts_to_resolve(&apps)
        .into_iter()
        .filter_map(|h| h.parse().ok().map(|ip| (h, ip)))
        .collect();
    catalog(&apps, options, &hosts, routed, &mut notes)
}

fn addresses(catalog: &Catalog, listen_port: u16) -> Vec<String> {
    catalog
        .services
        .iter()
        .find(|s| s.listen.port() == listen_port)
        .unwrap_or_else(|| panic!("no service on {listen_port}: {catalog:?}"))
        .instances
        .iter()
        .map(|i| i.address.to_string())
        .collect()
}

#[test]
fn pre_1_5_bridge_app_with_health_results() {
    let catalog = build(ZDD_APPS, &options(&["external"]));
    assert_eq!(catalog.services.len(), 1);
    let s = &catalog.services[0];
    assert_eq!(s.name, "nginx-green");
    assert_eq!(
        s.listen.port(),
        10000,
        "servicePort of container.docker.portMappings"
    );
    assert_eq!(
        addresses(&catalog, 10000),
        vec!["10.0.6.25:16916"],
        "host and host port"
    );
    assert!(
        build(ZDD_APPS, &options(&["internal"])).services.is_empty(),
        "group filter"
    );
}

#[test]
fn marathon_1_5_shape_keeps_the_vhost() {
    let catalog = build(MARATHON15_APPS, &options(&["*"]));
    assert_eq!(catalog.services.len(), 1);
    let s = &catalog.services[0];
    assert_eq!((s.name.as_str(), s.listen.port()), ("pywebserver", 10101));
    let vhost = s.vhost.as_ref().unwrap();
    assert_eq!(vhost.hosts, vec!["myvhost.com".to_string()]);
    assert_eq!(
        s.mode,
        ServiceMode::Http,
        "a vhost makes the port http, as in marathon-lb"
    );
    assert_eq!(s.app_id.as_deref(), Some("/pywebserver"));
    assert_eq!(addresses(&catalog, 10101), vec!["10.0.2.148:1565"]);
}

#[test]
fn ip_per_task_uses_the_task_ip_and_discovery_ports() {
    // marathon-lb's test_get_task_ip_and_ports_ip_per_task pair, with the service ports given as labels
    // (IP-per-task apps have none of their own) and a running state.
    let body = r#"{"apps":[{"id":"/ipt","ipAddress":{"discovery":{"ports":[{"number":123},{"number":234}]}},
        "labels":{"ringway.port.0.servicePort":"8123","ringway.port.1.servicePort":"8234"},
        "tasks":[{"id":"testtaskid","ipAddresses":[{"ipAddress":"1.2.3.4"}],"state":"TASK_RUNNING"}]}]}"#;
    let catalog = build(body, &options(&["*"]));
    assert_eq!(addresses(&catalog, 8123), vec!["1.2.3.4:123"]);
    assert_eq!(addresses(&catalog, 8234), vec!["1.2.3.4:234"]);
}

#[test]
fn proxymatic_labels_with_numeric_values() {
    let mut app: serde_json::Value = serde_json::from_str(PROXYMATIC_APP_VERSION).unwrap();
    app["tasks"] = serde_json::json!([
        {"id":"demo_webapp.1","host":"127.0.0.1","ports":[31468],"state":"TASK_RUNNING",
         "healthCheckResults":[{"alive":true,"consecutiveFailures":0}]}
    ]);
    let body = serde_json::json!({ "apps": [app] }).to_string();
    let catalog = build(&body, &options(&["*"]));
    let s = &catalog.services[0];
    assert_eq!((s.name.as_str(), s.listen.port()), ("webapp.demo", 1234));
    assert_eq!((s.maxconn, s.mode), (Some(150), ServiceMode::Http));
    assert_eq!(s.timeouts.idle_ms, Some(200_000));
    assert_eq!(s.instances[0].weight, 100);
    assert_eq!(s.instances[0].address.to_string(), "127.0.0.1:31468");
}

#[test]
fn only_running_and_healthy_tasks_are_routed() {
    let body = r#"{"apps":[{"id":"/web","portDefinitions":[{"port":9000}],"healthChecks":[{"protocol":"TCP"}],
        "tasks":[
          {"id":"ok","host":"127.0.0.1","ports":[1],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true}]},
          {"id":"mixed","host":"127.0.0.1","ports":[2],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true},{"alive":false}]},
          {"id":"no-results","host":"127.0.0.1","ports":[3],"state":"TASK_RUNNING","healthCheckResults":[]},
          {"id":"missing","host":"127.0.0.1","ports":[4],"state":"TASK_RUNNING"},
          {"id":"killing","host":"127.0.0.1","ports":[5],"state":"TASK_KILLING","healthCheckResults":[{"alive":true}]},
          {"id":"staging","host":"127.0.0.1","ports":[6],"state":"TASK_STAGING"},
          {"id":"lost","host":"127.0.0.1","ports":[7],"state":"TASK_LOST","healthCheckResults":[{"alive":true}]}
        ]},
        {"id":"/nochecks","portDefinitions":[{"port":9001}],
         "tasks":[{"id":"a","host":"127.0.0.1","ports":[8],"state":"TASK_RUNNING"}]}]}"#;
    let catalog = build(body, &options(&["*"]));
    assert_eq!(addresses(&catalog, 9000), vec!["127.0.0.1:1"]);
    assert_eq!(addresses(&catalog, 9001), vec!["127.0.0.1:8"]);
}

#[test]
fn a_task_keeps_its_route_while_its_health_results_are_missing() {
    let apps = |a: &str, b: &str, c: &str| {
        format!(
            r#"{{"apps":[{{"id":"/web","portDefinitions":[{{"port":9000}}],"healthChecks":[{{"protocol":"TCP"}}],
            "tasks":[
              {{"id":"a","host":"127.0.0.1","ports":[1],"state":"TASK_RUNNING"{a}}},
              {{"id":"b","host":"127.0.0.1","ports":[2],"state":"TASK_RUNNING"{b}}},
              {{"id":"c","host":"127.0.0.1","ports":[3],"state":"TASK_RUNNING"{c}}}]}}]}}"#
        )
    };
    let alive = r#","healthCheckResults":[{"alive":true}]"#;
    let dead = r#","healthCheckResults":[{"alive":false}]"#;
    let none = "";
    let empty = r#","healthCheckResults":[]"#;
    let options = options(&["*"]);
    let mut routed = Routed::default();
    let first = read(&apps(alive, alive, none), &options, &mut routed);
    assert_eq!(addresses(&first, 9000), vec!["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(routed.len(), 2);
    // Failover: no results for anyone. a and b stay; c, never routed, waits.
    let failover = read(&apps(none, empty, none), &options, &mut routed);
    assert_eq!(
        addresses(&failover, 9000),
        vec!["127.0.0.1:1", "127.0.0.1:2"]
    );
    // Still none: still routed (it was routed by the read before).
    let again = read(&apps(none, none, none), &options, &mut routed);
    assert_eq!(addresses(&again, 9000), vec!["127.0.0.1:1", "127.0.0.1:2"]);
    // A result that says b is down removes it; c's first passing result adds it.
    let results = read(&apps(none, dead, alive), &options, &mut routed);
    assert_eq!(
        addresses(&results, 9000),
        vec!["127.0.0.1:1", "127.0.0.1:3"]
    );
    // b lost its result again: it was not routed, so it still is not.
    let later = read(&apps(none, none, none), &options, &mut routed);
    assert_eq!(addresses(&later, 9000), vec!["127.0.0.1:1", "127.0.0.1:3"]);
    // A task that goes away is forgotten: back without results, it waits like a new one.
    let gone = r#"{"apps":[{"id":"/web","portDefinitions":[{"port":9000}],"healthChecks":[{"protocol":"TCP"}],"tasks":[]}]}"#;
    read(gone, &options, &mut routed);
    assert!(routed.is_empty());
    let back = read(&apps(none, none, none), &options, &mut routed);
    assert!(addresses(&back, 9000).is_empty());
}

#[test]
fn a_canary_joins_the_main_service_port() {
    let body = r#"{"apps":[
        {"id":"/demo/webapp","portDefinitions":[{"port":1234}],
         "labels":{"com.meltwater.proxymatic.port.0.maxconn":"150"},
         "tasks":[{"id":"a","host":"127.0.0.1","ports":[31468],"state":"TASK_RUNNING"}]},
        {"id":"/demo/webapp-canary","portDefinitions":[{"port":10000}],
         "labels":{"com.meltwater.proxymatic.port.0.servicePort":"1234","com.meltwater.proxymatic.port.0.weight":"100"},
         "tasks":[{"id":"b","host":"127.0.0.1","ports":[31469],"state":"TASK_RUNNING"}]}]}"#;
    let catalog = build(body, &options(&["*"]));
    assert_eq!(catalog.services.len(), 1);
    let s = &catalog.services[0];
    assert_eq!((s.name.as_str(), s.maxconn), ("webapp.demo", Some(150)));
    let weights: Vec<(u16, u16)> = s
        .instances
        .iter()
        .map(|i| (i.address.port(), i.weight))
        .collect();
    assert_eq!(weights, vec![(31468, 500), (31469, 100)]);
}

#[test]
fn bad_labels_skip_only_their_port() {
    let body = r#"{"apps":[
        {"id":"/bad","portDefinitions":[{"port":9000},{"port":9001}],
         "labels":{"ringway.port.0.maxconn":"-3","ringway.port.1.weight":"abc"},
         "tasks":[{"id":"a","host":"127.0.0.1","ports":[1,2],"state":"TASK_RUNNING"}]},
        {"id":"/good","portDefinitions":[{"port":9002}],
         "tasks":[{"id":"b","host":"127.0.0.1","ports":[3],"state":"TASK_RUNNING"}]},
        {"id":"/broken","portDefinitions":"not a list"}]}"#;
    let catalog = build(body, &options(&["*"]));
    let ports: Vec<u16> = catalog.services.iter().map(|s| s.listen.port()).collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(!ports.contains(&9000), "maxconn=-3 skips port 0 of /bad");
    assert_eq!(
        catalog
            .services
            .iter()
            .find(|s| s.listen.port() == 9001)
            .unwrap()
            .instances[0]
            .weight,
        500
    );
    assert_eq!(addresses(&catalog, 9002), vec!["127.0.0.1:3"]);
}

#[test]
fn malformed_json_is_an_error() {
    let mut notes = Notes::new("marathon");
    assert!(parse_apps(b"{\"apps\": [", &mut notes).is_err());
    assert!(parse_apps(b"<html>", &mut notes).is_err());
}

#[test]
fn a_service_port_0_and_bad_task_addresses_are_noted_and_skip_only_themselves() {
    let body = r#"{"apps":[
        {"id":"/unassigned","portDefinitions":[{"port":0}],
         "tasks":[{"id":"u","host":"127.0.0.1","ports":[1],"state":"TASK_RUNNING"}]},
        {"id":"/host","portDefinitions":[{"port":9000}],
         "tasks":[{"id":"zero","host":"127.0.0.1","ports":[0],"state":"TASK_RUNNING"},
                  {"id":"fine","host":"127.0.0.1","ports":[31000],"state":"TASK_RUNNING"}]},
        {"id":"/ipt","ipAddress":{"discovery":{"ports":[{"number":80}]}},
         "labels":{"ringway.port.0.servicePort":"8080"},
         "tasks":[{"id":"bad-ip","ipAddresses":[{"ipAddress":"10.0.0.x"}],"state":"TASK_RUNNING"},
                  {"id":"good","ipAddresses":[{"ipAddress":"10.0.0.9"}],"state":"TASK_RUNNING"}]}]}"#;
    let mut notes = Notes::new("marathon");
    let apps = parse_apps(body.as_bytes(), &mut notes).unwrap();
    let hosts = hosts_to_resolve(&apps)
        .into_iter()
        .filter_map(|h| h.parse().ok().map(|ip| (h, ip)))
        .collect();
    let catalog = catalog(
        &apps,
        &options(&["*"]),
        &hosts,
        &mut Routed::default(),
        &mut notes,
    );
    let ports: Vec<u16> = catalog.services.iter().map(|s| s.listen.port()).collect();
    assert_eq!(ports, vec![9000, 8080], "the unassigned port is skipped");
    assert_eq!(addresses(&catalog, 9000), vec!["127.0.0.1:31000"]);
    assert_eq!(addresses(&catalog, 8080), vec!["10.0.0.9:80"]);
    let noted: Vec<String> = notes.reported().map(ToString::to_string).collect();
    assert_eq!(
        noted,
        vec![
            "service host entry zero: tasks[].ports=\"127.0.0.1:0\": 0 is not a port",
            "service ipt entry bad-ip: tasks[].ipAddresses=\"10.0.0.x\": not an IP address",
            "service unassigned entry /unassigned: service port 0=\"0\": 0 is not a port",
        ]
    );
}

#[test]
fn unresolved_hosts_skip_their_tasks() {
    let body = r#"{"apps":[{"id":"/web","portDefinitions":[{"port":9000}],
        "tasks":[{"id":"a","host":"no-such-host.invalid","ports":[1],"state":"TASK_RUNNING"}]}]}"#;
    let mut notes = Notes::new("marathon");
    let apps = parse_apps(body.as_bytes(), &mut notes).unwrap();
    assert_eq!(
        hosts_to_resolve(&apps).into_iter().collect::<Vec<_>>(),
        vec!["no-such-host.invalid"]
    );
    let catalog = catalog(
        &apps,
        &options(&["*"]),
        &BTreeMap::new(),
        &mut Routed::default(),
        &mut notes,
    );
    assert!(catalog.services[0].instances.is_empty());
}
