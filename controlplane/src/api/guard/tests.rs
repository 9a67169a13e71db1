use super::*;
use hyper::header::HeaderValue;

const LISTEN: &str = "127.0.0.1:9191";

fn guard(token: Option<&str>, allowed: &[&str]) -> Guard {
    Guard::new(
        Access {
            token: token.map(str::to_string),
            allowed_origins: allowed
                .iter()
                .map(|o| normalize_origin(o).unwrap())
                .collect(),
        },
        LISTEN.parse().unwrap(),
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// The status and field of the refusal, or `None` if let in.
fn outcome(
    guard: &Guard,
    method: Method,
    pairs: &[(&'static str, &str)],
    query: Option<&str>,
    dfp: bool,
) -> Option<(u16, String)> {
    let headers = headers(pairs);
    guard
        .check(RequestHead {
            method: &method,
            headers: &headers,
            query,
            dfp,
        })
        .err()
        .map(|e| (e.status.as_u16(), e.field))
}

fn refused(status: u16, field: &str) -> Option<(u16, String)> {
    Some((status, field.to_string()))
}

#[test]
fn tools_without_origin_pass_and_other_sites_are_refused() {
    let g = guard(None, &[]);
    let get = |pairs: &[(&'static str, &str)]| outcome(&g, Method::GET, pairs, None, false);
    assert_eq!(get(&[("host", LISTEN)]), None, "curl");
    assert_eq!(get(&[]), None, "HTTP/1.0 without Host");
    assert_eq!(get(&[("origin", "http://127.0.0.1:9191")]), None);
    assert_eq!(get(&[("origin", "http://LOCALHOST:9191")]), None);
    assert_eq!(get(&[("sec-fetch-site", "same-origin")]), None);
    assert_eq!(
        get(&[("sec-fetch-site", "none")]),
        None,
        "typed in the address bar"
    );
    for (origin, why) in [
        ("http://evil.example", "another site"),
        ("null", "a sandboxed frame or file://"),
        ("http://127.0.0.1:9192", "another port"),
        ("https://127.0.0.1:9191", "another scheme"),
    ] {
        assert_eq!(get(&[("origin", origin)]), refused(403, "origin"), "{why}");
    }
    for site in ["cross-site", "same-site"] {
        assert_eq!(
            get(&[("sec-fetch-site", site)]),
            refused(403, "sec-fetch-site")
        );
    }
}

#[test]
fn without_a_token_only_addresses_localhost_and_allowed_hosts_may_be_the_host() {
    let g = guard(None, &["https://ops.example.com"]);
    let host = |h: &str| outcome(&g, Method::GET, &[("host", h)], None, false);
    for ok in [
        "127.0.0.1:9191",
        "localhost:9191",
        "localhost",
        "[::1]:9191",
        "ops.example.com",
    ] {
        assert_eq!(host(ok), None, "{ok}");
    }
    assert_eq!(host("rebound.evil.example:9191"), refused(403, "host"));
    let with_token = guard(Some("t"), &[]);
    assert_eq!(
        outcome(
            &with_token,
            Method::GET,
            &[("host", "proxy:8080"), ("authorization", "Bearer t")],
            None,
            false
        ),
        None,
        "a named host is fine with a token (docker-flow-swarm-listener calls http://proxy:8080)"
    );
}

#[test]
fn on_a_wildcard_address_the_own_origin_is_the_address_the_request_was_sent_to() {
    let g = Guard::new(Access::default(), "0.0.0.0:9191".parse().unwrap());
    let check = |pairs: &[(&'static str, &str)]| outcome(&g, Method::GET, pairs, None, false);
    assert_eq!(
        check(&[
            ("host", "10.0.0.7:9191"),
            ("origin", "http://10.0.0.7:9191")
        ]),
        None
    );
    assert_eq!(
        check(&[
            ("host", "10.0.0.7:9191"),
            ("origin", "http://10.0.0.8:9191")
        ]),
        refused(403, "origin")
    );
    assert_eq!(
        check(&[
            ("host", "evil.example:9191"),
            ("origin", "http://evil.example:9191")
        ]),
        refused(403, "origin"),
        "a rebound name is never the own origin"
    );
}

#[test]
fn the_token_is_accepted_as_bearer_basic_password_or_query_on_dfp_routes() {
    let g = guard(Some("s3cret"), &[]);
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let auth = |value: &str, query: Option<&str>, dfp: bool| {
        outcome(&g, Method::GET, &[("authorization", value)], query, dfp)
    };
    assert_eq!(auth("Bearer s3cret", None, false), None);
    assert_eq!(auth(&basic("ops:s3cret"), None, false), None);
    assert_eq!(auth(&basic(":s3cret"), None, false), None);
    for bad in [
        "Bearer s3cre".to_string(),
        "Bearer s3cret2".into(),
        "Bearer S3cret".into(),
        "Basic s3cret".into(),
        "s3cret".into(),
        basic("s3cret:x"),
        basic("s3cret"),
    ] {
        assert_eq!(
            auth(&bad, None, false),
            refused(401, "authorization"),
            "{bad}"
        );
    }
    let query = |q: &str, dfp: bool| outcome(&g, Method::GET, &[], Some(q), dfp);
    assert_eq!(query("serviceName=x&token=s3cret", true), None);
    assert_eq!(query("token=s3%63ret", true), None, "percent-encoded");
    assert_eq!(
        query("token=s3cret", false),
        refused(401, "authorization"),
        "only on docker-flow-proxy's routes"
    );
    assert_eq!(query("token=wrong", true), refused(401, "authorization"));
    assert_eq!(
        outcome(
            &g,
            Method::GET,
            &[
                ("origin", "http://evil.example"),
                ("authorization", "Bearer s3cret")
            ],
            None,
            false
        ),
        refused(403, "origin"),
        "a browser's cached credentials do not make a cross-site request acceptable"
    );
    assert!(!same_bytes(b"", b"x"));
    assert!(same_bytes(b"", b""));
}

#[test]
fn bodies_must_be_json() {
    let g = guard(None, &[]);
    let send =
        |method: Method, pairs: &[(&'static str, &str)]| outcome(&g, method, pairs, None, false);
    let json = [
        ("content-type", "application/json"),
        ("content-length", "2"),
    ];
    assert_eq!(send(Method::PUT, &json), None);
    assert_eq!(
        send(
            Method::POST,
            &[
                ("content-type", "Application/JSON; charset=utf-8"),
                ("transfer-encoding", "chunked")
            ]
        ),
        None
    );
    assert_eq!(
        send(Method::POST, &[("content-length", "0")]),
        None,
        "no body"
    );
    assert_eq!(send(Method::DELETE, &[("content-length", "5")]), None);
    for bad in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        assert_eq!(
            send(
                Method::POST,
                &[("content-type", bad), ("content-length", "9")]
            ),
            refused(415, "content-type"),
            "{bad}"
        );
    }
    assert_eq!(
        send(Method::PUT, &[("content-length", "9")]),
        refused(415, "content-type"),
        "no type at all"
    );
}

#[test]
fn origins_are_normalized_as_browsers_send_them() {
    assert_eq!(
        normalize_origin("HTTPS://Ops.Example.com:443/").unwrap(),
        "https://ops.example.com"
    );
    assert_eq!(
        normalize_origin("http://10.0.0.1:8080").unwrap(),
        "http://10.0.0.1:8080"
    );
    assert_eq!(normalize_origin("http://[::1]:80").unwrap(), "http://[::1]");
    for bad in [
        "ops.example.com",
        "ftp://x",
        "https://",
        "https://x/path",
        "https://u@x",
    ] {
        assert!(normalize_origin(bad).is_err(), "{bad}");
    }
}
