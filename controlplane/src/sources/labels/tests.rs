//! The label rules, value by value.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn proxymatics_labels_from_its_fixture() {
    // The labels of proxymatic's testLoadBalancerOptions fixture (numbers given as strings by the parser).
    let l = labels(&[
        ("com.meltwater.proxymatic.port.0.weight", "100"),
        ("com.meltwater.proxymatic.port.0.maxconn", "150"),
        ("com.meltwater.proxymatic.port.0.mode", "http"),
        ("com.meltwater.proxymatic.port.0.timeout.client", "100"),
        ("com.meltwater.proxymatic.port.0.timeout.server", "200"),
    ]);
    let out = port_settings(&l, 0);
    assert!(out.problems.is_empty());
    let s = out.settings.unwrap();
    assert_eq!(
        (s.weight, s.maxconn, s.mode),
        (100, Some(150), ServiceMode::Http)
    );
    assert_eq!(
        s.timeouts.idle_ms,
        Some(200_000),
        "the larger of client and server"
    );
    assert_eq!(s.timeouts.connect_ms, None);
    // Port 1 has no labels: defaults.
    let other = port_settings(&l, 1).settings.unwrap();
    assert_eq!(
        (other.weight, other.maxconn, other.mode),
        (DEFAULT_WEIGHT, None, ServiceMode::Tcp)
    );
}

#[test]
fn ringway_port_labels_win_over_proxymatic_and_the_short_form_is_a_default() {
    let l = labels(&[
        ("ringway.port.1.weight", "7"),
        ("com.meltwater.proxymatic.port.1.weight", "9"),
        ("ringway.weight", "3"),
        ("ringway.maxconn", "50"),
        ("ringway.port.0.servicePort", "1234"),
    ]);
    let p0 = port_settings(&l, 0).settings.unwrap();
    let p1 = port_settings(&l, 1).settings.unwrap();
    assert_eq!(
        (p0.weight, p0.maxconn, p0.service_port),
        (3, Some(50), Some(1234))
    );
    assert_eq!(
        (p1.weight, p1.maxconn, p1.service_port),
        (7, Some(50), None)
    );
}

#[test]
fn bad_values_use_the_default_or_skip_the_port() {
    let cases = [
        (
            "weight",
            "abc",
            Consequence::DefaultUsed,
            "is not an integer",
        ),
        (
            "weight",
            "1001",
            Consequence::DefaultUsed,
            "must be in 0..=1000",
        ),
        (
            "weight",
            "2.5",
            Consequence::DefaultUsed,
            "is not an integer",
        ),
        (
            "mode",
            "udp",
            Consequence::DefaultUsed,
            "expected tcp or http",
        ),
        (
            "timeout.client",
            "-1",
            Consequence::DefaultUsed,
            "must not be negative",
        ),
        (
            "maxconn",
            "-3",
            Consequence::PortSkipped,
            "must not be negative",
        ),
        (
            "maxconn",
            "lots",
            Consequence::PortSkipped,
            "is not an integer",
        ),
        (
            "servicePort",
            "70000",
            Consequence::PortSkipped,
            "must be in 1..=65535",
        ),
    ];
    for (name, value, consequence, reason) in cases {
        let key = format!("com.meltwater.proxymatic.port.0.{name}");
        let out = port_settings(&labels(&[(&key, value)]), 0);
        assert_eq!(out.problems.len(), 1, "{name}={value}");
        let p = &out.problems[0];
        assert_eq!((p.label.as_str(), p.value.as_str()), (key.as_str(), value));
        assert_eq!(p.consequence, consequence, "{name}={value}");
        assert!(p.reason.contains(reason), "{name}={value}: {}", p.reason);
        match consequence {
            Consequence::PortSkipped => assert!(out.settings.is_none(), "{name}={value}"),
            Consequence::DefaultUsed => {
                let s = out.settings.unwrap();
                assert_eq!(
                    (s.weight, s.mode, s.timeouts.idle_ms),
                    (DEFAULT_WEIGHT, ServiceMode::Tcp, None)
                );
            }
        }
    }
}

#[test]
fn weight_0_drains_and_maxconn_0_is_unlimited_as_in_proxymatic() {
    let l = labels(&[
        ("com.meltwater.proxymatic.port.0.weight", "0"),
        ("com.meltwater.proxymatic.port.0.maxconn", "0"),
    ]);
    let out = port_settings(&l, 0);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let s = out.settings.unwrap();
    assert!(s.drain, "weight 0: no new connections");
    assert_eq!(
        s.weight, DEFAULT_WEIGHT,
        "the model never carries a weight of 0"
    );
    assert_eq!(s.maxconn, None, "maxconn 0: no limit, never Some(0)");
    let normal = port_settings(&labels(&[("ringway.weight", "1")]), 0)
        .settings
        .unwrap();
    assert!(!normal.drain);
    assert_eq!(normal.weight, 1);
}

#[test]
fn keys_match_without_regard_to_case_as_registrator_lowercases_meta() {
    // registrator: -e SERVICE_ringway.servicePort=8080 -e SERVICE_HAPROXY_GROUP=external
    let l = labels(&[
        ("ringway.serviceport", "8080"),
        ("haproxy_group", "external"),
        ("haproxy_0_vhost", "Web.Example"),
    ]);
    let s = port_settings(&l, 0).settings.unwrap();
    assert_eq!(s.service_port, Some(8080));
    assert_eq!(s.groups, vec!["external"]);
    assert_eq!(s.vhost.unwrap().hosts, vec!["web.example"]);
    // The documented spelling wins over one that differs only in case.
    let both = labels(&[("HAPROXY_GROUP", "a"), ("haproxy_group", "b")]);
    assert_eq!(port_settings(&both, 0).settings.unwrap().groups, vec!["a"]);
}

#[test]
fn vhosts_and_groups_follow_marathon_lb() {
    let l = labels(&[
        ("HAPROXY_GROUP", "external, internal"),
        ("HAPROXY_1_GROUP", "special"),
        ("HAPROXY_0_VHOST", "MyVhost.com,other.example"),
    ]);
    let p0 = port_settings(&l, 0).settings.unwrap();
    let p1 = port_settings(&l, 1).settings.unwrap();
    assert_eq!(
        p0.vhost.as_ref().unwrap().hosts,
        vec!["myvhost.com", "other.example"]
    );
    assert_eq!(p0.mode, ServiceMode::Http, "a vhost makes the port http");
    assert_eq!(p1.vhost, None);
    assert_eq!(p1.mode, ServiceMode::Tcp);
    assert_eq!(p0.groups, vec!["external", "internal"]);
    assert_eq!(
        p1.groups,
        vec!["special"],
        "a per-port group overrides the app's"
    );

    let wanted = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(group_accepts(&wanted(&["external"]), &p0.groups));
    assert!(!group_accepts(&wanted(&["external"]), &p1.groups));
    assert!(
        group_accepts(&wanted(&["*"]), &[]),
        "* takes apps without a group"
    );
    assert!(!group_accepts(&wanted(&["external"]), &[]));
    assert!(group_accepts(&wanted(&["a", "special"]), &p1.groups));
}

#[test]
fn marathon_lb_mode_and_path_labels() {
    let l = labels(&[
        ("HAPROXY_0_VHOST", "shop.example"),
        ("HAPROXY_0_PATH", "/api /cart"),
        ("HAPROXY_0_MODE", "tcp"),
        ("HAPROXY_1_MODE", "HTTP"),
        ("HAPROXY_2_PATH", "/lonely"),
    ]);
    let p0 = port_settings(&l, 0);
    let s0 = p0.settings.unwrap();
    assert_eq!(
        s0.mode,
        ServiceMode::Tcp,
        "an explicit mode wins over the vhost's default"
    );
    let vhost = s0.vhost.unwrap();
    assert_eq!(vhost.paths, vec!["/api", "/cart"]);
    assert_eq!(vhost.path_match, PathMatch::Prefix);
    assert_eq!(
        port_settings(&l, 1).settings.unwrap().mode,
        ServiceMode::Http
    );
    let p2 = port_settings(&l, 2);
    assert_eq!(p2.settings.unwrap().vhost, None);
    assert_eq!(p2.problems[0].label, "HAPROXY_2_PATH");
    assert_eq!(p2.problems[0].consequence, Consequence::DefaultUsed);
    let ringway = labels(&[("ringway.port.0.mode", "http"), ("HAPROXY_0_MODE", "tcp")]);
    assert_eq!(
        port_settings(&ringway, 0).settings.unwrap().mode,
        ServiceMode::Http,
        "Ringway's label wins over marathon-lb's"
    );
}

#[test]
fn a_bad_vhost_or_path_skips_the_port() {
    for (key, value, field) in [
        ("HAPROXY_0_VHOST", "shop.example:80", "HAPROXY_0_VHOST"),
        ("HAPROXY_0_PATH", "api", "HAPROXY_0_PATH"),
    ] {
        let mut l = labels(&[(key, value)]);
        l.entry("HAPROXY_0_VHOST".into())
            .or_insert_with(|| "shop.example".into());
        let out = port_settings(&l, 0);
        assert!(out.settings.is_none(), "{key}={value}");
        assert_eq!(out.problems[0].label, field);
        assert_eq!(out.problems[0].consequence, Consequence::PortSkipped);
    }
}

#[test]
fn timeout_server_is_also_the_response_timeout() {
    let l = labels(&[("com.meltwater.proxymatic.port.0.timeout.server", "30")]);
    let s = port_settings(&l, 0).settings.unwrap();
    assert_eq!(s.timeouts.server_ms, Some(30_000));
    assert_eq!(s.timeouts.idle_ms, Some(30_000));
}

#[test]
fn tags_become_labels() {
    let tags = vec![
        "primary".to_string(),
        "ringway.maxconn=50".into(),
        "HAPROXY_GROUP = ext".into(),
    ];
    let l = from_tags(&tags);
    assert_eq!(l.len(), 2);
    assert_eq!(l["ringway.maxconn"], "50");
    assert_eq!(l["HAPROXY_GROUP"], "ext");
}
