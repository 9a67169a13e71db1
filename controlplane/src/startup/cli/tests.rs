use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("ringway-controlplane").chain(args.iter().copied()))
}

#[test]
fn definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn defaults() {
    let config = parse(&["--services", "s.toml"])
        .unwrap()
        .into_config()
        .unwrap();
    assert_eq!(config.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(config.group_size.get(), 1);
    assert_eq!(config.default_max_connections.get(), 8192);
    assert_eq!(config.ping_interval, Duration::from_millis(5_000));
    assert!(config.allow_uids.is_empty());
}

#[test]
fn zero_group_size_and_max_connections_are_refused() {
    for flag in ["--group-size", "--max-connections", "--ping-interval-ms"] {
        let err = parse(&[flag, "0"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{flag}"
        );
    }
    assert!(parse(&["--group-size", "2"]).is_ok());
}

#[test]
fn discovery_flags() {
    let config = parse(&[
        "--marathon",
        "http://m1:8080,http://m2:8080/",
        "--registrator",
        "etcd://127.0.0.1:2379/services",
        "--consul",
        "http://c:8500",
        "--group",
        "external,internal",
        "--expose-host",
        "--refresh-interval",
        "500ms",
        "--coalesce-ms",
        "0",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    assert_eq!(
        config.marathon.as_ref().unwrap().replicas,
        vec!["http://m1:8080", "http://m2:8080"]
    );
    assert_eq!(config.registrator.as_ref().unwrap().path, "/services");
    assert_eq!(config.discovery.groups, vec!["external", "internal"]);
    assert!(config.discovery.expose_host);
    assert_eq!(
        config.discovery.refresh_interval,
        Duration::from_millis(500)
    );
    assert_eq!(config.coalescing.window, Duration::ZERO);
    assert!(config.has_source());

    let defaults = parse(&[]).unwrap().into_config().unwrap();
    assert!(!defaults.has_source());
    assert_eq!(defaults.discovery.groups, vec!["*"]);
    assert_eq!(defaults.discovery.refresh_interval, Duration::from_secs(60));
    assert_eq!(defaults.coalescing.window, Duration::from_millis(5));
    assert!(!defaults.discovery.expose_host);

    assert!(
        parse(&["--registrator", "http://x"])
            .unwrap()
            .into_config()
            .is_err()
    );
    assert!(
        parse(&["--refresh-interval", "0"])
            .unwrap()
            .into_config()
            .is_err()
    );
    assert!(parse(&["--refresh-interval", "5h"]).is_err());
}

#[test]
fn durations_read_like_proxymatics_and_ours() {
    assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("x").is_err());
}

#[test]
fn the_api_is_on_loopback_by_default_and_can_be_disabled() {
    let config = parse(&[]).unwrap().into_config().unwrap();
    assert_eq!(config.api, Some("127.0.0.1:9095".parse().unwrap()));
    assert_eq!(config.api_token, None);
    assert_eq!(
        config.api_state_file,
        Some(PathBuf::from(DEFAULT_API_STATE_FILE))
    );
    let config = parse(&["--api", "", "--api-state-file", "", "--api-token", ""])
        .unwrap()
        .into_config()
        .unwrap();
    assert_eq!(
        (config.api, config.api_token, config.api_state_file),
        (None, None, None)
    );
    let config = parse(&["--api", "[::1]:0", "--api-token", "s3cret"])
        .unwrap()
        .into_config()
        .unwrap();
    assert_eq!(config.api, Some("[::1]:0".parse().unwrap()));
    assert_eq!(config.api_token, Some(ApiToken("s3cret".into())));
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "the token is never printed"
    );
    let err = parse(&["--api", "localhost"])
        .unwrap()
        .into_config()
        .unwrap_err();
    assert!(err.to_string().starts_with("--api: \"localhost\""), "{err}");
}

#[test]
fn the_api_is_safe_by_default_and_its_limits_can_be_set() {
    let config = parse(&[]).unwrap().into_config().unwrap();
    assert_eq!(config.api_policy.ports, 1024..=65535);
    assert_eq!(
        config.api_policy.reserved,
        [9090].into(),
        "the status endpoint's"
    );
    assert!(config.api_policy.allow_backends.is_empty());
    assert!(!config.api_policy.allow_merge);
    assert_eq!(config.api_policy.max_registrations, 1000);
    assert!(config.api_allowed_origins.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-file\n").unwrap();
    let config = parse(&[
        "--api-token-file",
        token.to_str().unwrap(),
        "--api-allowed-origins",
        "https://Console.example:443,http://10.0.0.1:8080",
        "--api-port-range",
        "20000-30000",
        "--api-reserved-ports",
        "22000,23000",
        "--dataplane-status-endpoint",
        "127.0.0.1:9999",
        "--api-allow-backends",
        "127.0.0.0/8,169.254.169.254",
        "--api-allow-merge",
        "--api-max-registrations",
        "5",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    assert_eq!(config.api_token, Some(ApiToken("from-file".into())));
    assert_eq!(
        config.api_allowed_origins,
        vec!["https://console.example", "http://10.0.0.1:8080"]
    );
    assert_eq!(config.api_policy.ports, 20000..=30000);
    assert_eq!(config.api_policy.reserved, [9999, 22000, 23000].into());
    assert_eq!(config.api_policy.allow_backends.len(), 2);
    assert!(config.api_policy.allow_merge);
    assert_eq!(config.api_policy.max_registrations, 5);

    assert!(
        parse(&["--api-token", "a", "--api-token-file", "f"]).is_err(),
        "one token source"
    );
    for (flag, value) in [
        ("--api-allowed-origins", "console.example"),
        ("--api-port-range", "9-1"),
        ("--api-allow-backends", "localhost"),
        ("--dataplane-status-endpoint", ":9090"),
        ("--api-token-file", "/nonexistent/token"),
    ] {
        let err = parse(&[flag, value]).unwrap().into_config().unwrap_err();
        assert!(
            err.to_string().contains(flag.trim_start_matches('-')),
            "{flag}: {err}"
        );
    }
}

#[test]
fn secured_sources_take_credentials_tokens_and_tls_files_and_never_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("marathon-auth");
    std::fs::write(&auth, "ops:file-secret\n").unwrap();
    let token = dir.path().join("consul-token");
    std::fs::write(&token, "token-secret\n").unwrap();
    let config = parse(&[
        "--marathon",
        "https://m1:8443,https://url:url-secret@m2:8443",
        "--marathon-auth-file",
        auth.to_str().unwrap(),
        "--marathon-ca",
        "/etc/ringway/marathon-ca.pem",
        "--consul",
        "https://consul:8501",
        "--consul-token-file",
        token.to_str().unwrap(),
        "--etcd-v3",
        "https://e1:2379,https://e2:2379",
        "--registrator",
        "etcd+https://e1:2379,e2:2379/services",
        "--etcd-ca",
        "/ca.pem",
        "--etcd-cert",
        "/client.pem",
        "--etcd-key",
        "/client-key.pem",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let marathon = config.marathon.as_ref().unwrap();
    assert_eq!(
        marathon.replicas,
        vec!["https://m1:8443", "https://m2:8443"]
    );
    assert_eq!(marathon.credentials[0].as_ref().unwrap().user, "ops");
    assert_eq!(marathon.credentials[1].as_ref().unwrap().user, "url");
    assert_eq!(
        marathon.tls.ca.as_deref(),
        Some(std::path::Path::new("/etc/ringway/marathon-ca.pem"))
    );
    let consul = config.consul.as_ref().unwrap();
    assert_eq!(consul.token.as_ref().unwrap().expose(), "token-secret");
    let etcd = config.etcd_v3.as_ref().unwrap();
    assert_eq!(etcd.endpoints, vec!["https://e1:2379", "https://e2:2379"]);
    assert_eq!(
        etcd.tls.cert.as_deref(),
        Some(std::path::Path::new("/client.pem"))
    );
    assert_eq!(config.registrator.as_ref().unwrap().bases.len(), 2);
    let shown = format!("{config:?}");
    for secret in ["file-secret", "url-secret", "token-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }

    // Half a client identity, a non-HTTP URL, two sources of one secret: refused, secrets unshown.
    assert!(parse(&["--etcd-cert", "/c.pem"]).is_err());
    let err = parse(&["--marathon", "ftp://u:hidden@m1"])
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--marathon:") && !err.contains("hidden"),
        "{err}"
    );
    assert!(parse(&["--consul-token", "a", "--consul-token-file", "/f"]).is_err());
    let err = parse(&["--marathon", "http://m1", "--marathon-auth", "no-colon"])
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
    assert_eq!(err, "--marathon-auth must look like user:password");
}

#[test]
fn http_routing_flags() {
    let config = parse(&[
        "--listen-address",
        "127.0.0.2",
        "--vhost-domain",
        "Example.COM.",
        "--vhost-port",
        "8080",
        "--app-id-listen",
        "0.0.0.0:9091",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    assert_eq!(
        config.discovery.vhost_domain.as_deref(),
        Some("example.com")
    );
    let compile = config.compile_settings();
    assert_eq!(compile.vhost_listen, "127.0.0.2:8080".parse().unwrap());
    assert_eq!(compile.app_id_listen, Some("0.0.0.0:9091".parse().unwrap()));
    let defaults = parse(&[]).unwrap().into_config().unwrap();
    assert_eq!(defaults.compile_settings().vhost_listen.port(), 80);
    assert_eq!(
        defaults.app_id_listen, None,
        "app-id routing is off by default"
    );
    assert_eq!(defaults.api, Some("127.0.0.1:9095".parse().unwrap()));
    assert!(parse(&["--vhost-domain", "*.example.com"]).is_err());
    assert!(parse(&["--vhost-domain", "exa mple"]).is_err());
    assert!(parse(&["--vhost-port", "0"]).is_err());
    let marathon_lb = parse(&["--app-id-listen", ":9091"]).unwrap();
    assert_eq!(
        marathon_lb.app_id_listen.0,
        Some("0.0.0.0:9091".parse().unwrap())
    );
    assert!(parse(&["--app-id-listen", "9091"]).is_err());
}

#[test]
fn allow_uid_repeats() {
    let cli = parse(&["--allow-uid", "5", "--allow-uid", "7"]).unwrap();
    assert_eq!(cli.allow_uids, vec![5, 7]);
    let cli = parse(&["--allow-uid", "5,7"]).unwrap();
    assert_eq!(cli.allow_uids, vec![5, 7]);
}

#[test]
fn help_names_every_environment_variable() {
    let help = Cli::command().render_long_help().to_string();
    for var in [
        "RINGWAY_SERVICES",
        "RINGWAY_SOCKET",
        "GROUP_SIZE",
        "MAX_CONNECTIONS",
        "RINGWAY_ALLOW_UIDS",
        "RINGWAY_LOG_FORMAT",
        "RINGWAY_PING_INTERVAL_MS",
        "MARATHON_URL",
        "REGISTRATOR_URL",
        "RINGWAY_ETCD_V3_URL",
        "RINGWAY_ETCD_PREFIX",
        "CONSUL_URL",
        "RINGWAY_GROUPS",
        "EXPOSE_HOST",
        "RINGWAY_LISTEN_ADDRESS",
        "REFRESH_INTERVAL",
        "RINGWAY_COALESCE_MS",
        "RINGWAY_INITIAL_SYNC_TIMEOUT",
        "RINGWAY_API",
        "RINGWAY_API_TOKEN",
        "RINGWAY_API_STATE_FILE",
        "RINGWAY_API_TOKEN_FILE",
        "RINGWAY_API_ALLOWED_ORIGINS",
        "RINGWAY_API_PORT_RANGE",
        "RINGWAY_API_RESERVED_PORTS",
        "STATUS_ENDPOINT",
        "RINGWAY_API_ALLOW_BACKENDS",
        "RINGWAY_API_ALLOW_MERGE",
        "RINGWAY_API_MAX_REGISTRATIONS",
        "MARATHON_AUTH",
        "MARATHON_AUTH_FILE",
        "MARATHON_CA",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "RINGWAY_ETCD_CA",
        "RINGWAY_ETCD_CERT",
        "RINGWAY_ETCD_KEY",
        "VHOST_DOMAIN",
        "VHOST_PORT",
        "RINGWAY_APP_ID_LISTEN",
    ] {
        assert!(
            help.contains(&format!("env: {var}")),
            "{var} missing from:\n{help}"
        );
    }
}
