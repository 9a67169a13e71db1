use proptest::prelude::*;

use super::*;

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

/// The target a request reaches, if any.
fn target(router: &Router, host: &str, path: &str) -> Option<usize> {
    router
        .route(Some(host.as_bytes()), path.as_bytes(), no_headers)
        .map(|m| m.target)
}

#[test]
fn exact_host_then_wildcards_then_any_host() {
    let router = Router::build(&[
        RouteSpec::new("exact", &["shop.example.com"], &[], PathMatch::Prefix, 1),
        RouteSpec::new("wild", &["*.example.com"], &[], PathMatch::Prefix, 2),
        RouteSpec::new("deeper", &["*.eu.example.com"], &[], PathMatch::Prefix, 3),
        RouteSpec::new("fallback", &[], &[], PathMatch::Prefix, 4),
    ])
    .unwrap();
    assert_eq!(target(&router, "shop.example.com", "/"), Some(1));
    assert_eq!(
        target(&router, "SHOP.Example.com.:8080", "/"),
        Some(1),
        "case, trailing dot and port"
    );
    assert_eq!(target(&router, "cart.example.com", "/"), Some(2));
    assert_eq!(
        target(&router, "a.b.example.com", "/"),
        Some(2),
        "wildcards match several labels"
    );
    assert_eq!(
        target(&router, "x.eu.example.com", "/"),
        Some(3),
        "the most specific wildcard"
    );
    assert_eq!(
        target(&router, "example.com", "/"),
        Some(4),
        "a wildcard does not match its base"
    );
    assert_eq!(target(&router, "other.org", "/"), Some(4));
    assert_eq!(
        router.route(None, b"/", no_headers).map(|m| m.target),
        Some(4)
    );
}

#[test]
fn longest_prefix_exact_regex_and_fall_through() {
    let router = Router::build(&[
        RouteSpec::new("api", &["a.com"], &["/api"], PathMatch::Prefix, 1),
        RouteSpec::new("api-v2", &["a.com"], &["/api/v2"], PathMatch::Prefix, 2),
        RouteSpec::new("exact", &["a.com"], &["/api/v2"], PathMatch::Exact, 3),
        RouteSpec::new(
            "regex",
            &["a.com"],
            &["^/img/.*\\.png$"],
            PathMatch::Regex,
            4,
        ),
        RouteSpec::new("root", &["*.com"], &["/"], PathMatch::Prefix, 5),
    ])
    .unwrap();
    assert_eq!(target(&router, "a.com", "/api/users"), Some(1));
    assert_eq!(
        target(&router, "a.com", "/apix"),
        Some(1),
        "byte prefix, as HAProxy path_beg"
    );
    assert_eq!(target(&router, "a.com", "/api/v2/x"), Some(2));
    assert_eq!(
        target(&router, "a.com", "/api/v2"),
        Some(3),
        "exact beats a prefix of the same length"
    );
    assert_eq!(target(&router, "a.com", "/img/cat.png"), Some(4));
    // No path of the exact host matches: the wildcard host's routes are tried.
    assert_eq!(target(&router, "a.com", "/img/cat.gif"), Some(5));
    assert_eq!(target(&router, "a.com", "/other"), Some(5));
    assert_eq!(target(&router, "b.org", "/"), None);
    assert_eq!(
        target(&router, "a.com", "/%61pi"),
        Some(5),
        "paths are not percent-decoded"
    );
    // An empty path (absolute-form `http://a.com`) is `/`.
    assert_eq!(target(&router, "b.com", ""), Some(5));
}

#[test]
fn header_routes_come_first_and_fall_back() {
    let mut app = RouteSpec::new("app-id", &[], &[], PathMatch::Prefix, 7);
    app.header = Some(HeaderMatch {
        name: "X-Marathon-App-Id".into(),
        value: "/shop/web".into(),
    });
    let router = Router::build(&[
        app,
        RouteSpec::new("host", &["a.com"], &[], PathMatch::Prefix, 1),
    ])
    .unwrap();
    assert!(router.has_header_routes());
    assert_eq!(
        router.header_names().collect::<Vec<_>>(),
        ["x-marathon-app-id"]
    );
    let with = |name: &str| (name == "x-marathon-app-id").then_some(&b" /shop/web"[..]);
    let other = |name: &str| (name == "x-marathon-app-id").then_some(&b"/shop/db"[..]);
    assert_eq!(
        router.route(Some(b"a.com"), b"/", with).map(|m| m.target),
        Some(7)
    );
    assert_eq!(
        router.route(Some(b"a.com"), b"/", other).map(|m| m.target),
        Some(1)
    );
    assert_eq!(router.route(Some(b"b.com"), b"/", other), None);
}

#[test]
fn conflicts_resolve_by_name_whatever_the_order() {
    let a = RouteSpec::new("alpha", &["a.com"], &["/x"], PathMatch::Prefix, 1);
    let b = RouteSpec::new("beta", &["A.com"], &["/x", "/y"], PathMatch::Prefix, 2);
    for specs in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
        let router = Router::build(&specs).unwrap();
        assert_eq!(target(&router, "a.com", "/x"), Some(1));
        assert_eq!(target(&router, "a.com", "/y"), Some(2));
        assert_eq!(
            router.conflicts(),
            [Conflict {
                kept: "alpha".into(),
                dropped: "beta".into(),
                host: "a.com".into(),
                path: "/x".into()
            }]
        );
    }
    // Prefix and exact on the same path are different claims.
    let c = RouteSpec::new("gamma", &["a.com"], &["/x"], PathMatch::Exact, 3);
    assert!(Router::build(&[a, c]).unwrap().conflicts().is_empty());
}

#[test]
fn refuses_invalid_routes() {
    let bad_hosts = [
        "",
        "a.com:80",
        "*",
        "a.*.com",
        "a b",
        "http://a.com",
        "..a",
        "a..b",
    ];
    for host in bad_hosts {
        let err =
            Router::build(&[RouteSpec::new("r", &[host], &[], PathMatch::Prefix, 0)]).unwrap_err();
        assert!(
            matches!(err, RouterError::InvalidHost { .. }),
            "{host:?}: {err}"
        );
    }
    let err =
        Router::build(&[RouteSpec::new("r", &[], &["api"], PathMatch::Prefix, 0)]).unwrap_err();
    assert!(matches!(err, RouterError::InvalidPath { .. }));
    let err = Router::build(&[RouteSpec::new(
        "r",
        &[],
        &["(unclosed"],
        PathMatch::Regex,
        0,
    )])
    .unwrap_err();
    assert!(err.to_string().contains("\"r\""), "{err}");
    Router::build(&[RouteSpec::new(
        "r",
        &["[::1]", "10.0.0.1", "under_score.a"],
        &[],
        PathMatch::Prefix,
        0,
    )])
    .unwrap();
}

#[test]
fn five_thousand_hosts() {
    let specs: Vec<RouteSpec> = (0..5000)
        .map(|i| {
            RouteSpec::new(
                &format!("svc-{i}"),
                &[&format!("app{i}.example.com")],
                &[],
                PathMatch::Prefix,
                i,
            )
        })
        .collect();
    let router = Router::build(&specs).unwrap();
    for i in (0..5000).step_by(97) {
        assert_eq!(
            target(&router, &format!("app{i}.example.com"), "/"),
            Some(i)
        );
    }
    assert_eq!(target(&router, "app5000.example.com", "/"), None);
}

/// A label of a generated host name.
fn label() -> impl Strategy<Value = String> {
    "[a-d]{1,2}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over random sets of exact and wildcard hosts with random prefixes, every lookup agrees with a
    /// plain model of the rules: the exact host if any of its prefixes match (the longest winning),
    /// else the most specific matching wildcard with a matching prefix, else nothing.
    #[test]
    fn agrees_with_a_model(
        routes in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(label(), 1..4), prop::collection::vec("/[a-c]{0,3}", 1..3)),
            1..20,
        ),
        queries in prop::collection::vec((prop::collection::vec(label(), 1..5), "/[a-c]{0,4}"), 1..20),
    ) {
        let specs: Vec<RouteSpec> = routes
            .iter()
            .enumerate()
            .map(|(i, (wildcard, labels, paths))| {
                let host = labels.join(".");
                let host = if *wildcard { format!("*.{host}") } else { host };
                RouteSpec {
                    name: format!("r{i:03}"),
                    hosts: vec![host],
                    paths: paths.clone(),
                    path_match: PathMatch::Prefix,
                    header: None,
                    target: i,
                }
            })
            .collect();
        let router = Router::build(&specs).unwrap();

        for (labels, path) in queries {
            let host = labels.join(".");
            // The model: per host level, the longest matching prefix; the lowest route index among
            // equal claims (names sort like indices).
            let best_at = |wanted: &dyn Fn(&RouteSpec) -> bool| -> Option<usize> {
                specs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| wanted(s))
                    .flat_map(|(i, s)| s.paths.iter().map(move |p| (i, p)))
                    .filter(|(_, p)| path.starts_with(p.as_str()))
                    .max_by(|(i, p), (j, q)| p.len().cmp(&q.len()).then(j.cmp(i)))
                    .map(|(i, _)| i)
            };
            let mut expected = best_at(&|s: &RouteSpec| s.hosts[0] == host);
            if expected.is_none() {
                // Wildcards from the most specific suffix to the least.
                let mut rest = host.as_str();
                while let Some(dot) = rest.find('.') {
                    rest = &rest[dot + 1..];
                    let wildcard = format!("*.{rest}");
                    expected = best_at(&|s: &RouteSpec| s.hosts[0] == wildcard);
                    if expected.is_some() {
                        break;
                    }
                }
            }
            let got = router.route(Some(host.as_bytes()), path.as_bytes(), no_headers).map(|m| m.target);
            prop_assert_eq!(got, expected, "host {} path {}", host, path);
        }
    }
}
