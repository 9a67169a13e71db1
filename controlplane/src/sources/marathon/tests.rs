use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;

#[test]
fn replica_urls_lose_their_credentials_and_keep_them_apart() {
    let auth = Credentials::parse("ops:flag-secret", "--marathon-auth").unwrap();
    let config = MarathonConfig::new(
        &[
            "https://own:url-secret@m1:8443/".into(),
            "https://m2:8443".into(),
            " ".into(),
        ],
        Some(auth.clone()),
        TlsFiles::none("marathon"),
    )
    .unwrap();
    assert_eq!(config.replicas, vec!["https://m1:8443", "https://m2:8443"]);
    assert_eq!(
        config.credentials[0].as_ref().unwrap().user,
        "own",
        "the URL's own wins"
    );
    assert_eq!(config.credentials[1], Some(auth));
    let shown = format!("{config:?}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[test]
fn redirects_keep_to_http_and_never_downgrade_credentials() {
    let from = Url::parse("https://standby:8443/v2/events").unwrap();
    let leader = redirect_target(&from, "https://leader:8443/v2/events", true).unwrap();
    assert_eq!(leader.as_str(), "https://leader:8443/v2/events");
    let relative = redirect_target(&from, "/v2/events?x=1", true).unwrap();
    assert_eq!(relative.as_str(), "https://standby:8443/v2/events?x=1");
    let stripped = redirect_target(&from, "https://u:p@leader/v2/events", true).unwrap();
    assert_eq!(stripped.as_str(), "https://leader/v2/events");
    let err = redirect_target(&from, "http://u:hidden@leader/v2/events", true).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unencrypted") && !text.contains("hidden"),
        "{text}"
    );
    assert!(redirect_target(&from, "http://leader/v2/events", false).is_ok());
    assert!(redirect_target(&from, "ftp://leader/", false).is_err());
}

#[tokio::test]
async fn an_event_stream_whose_replica_never_answers_gives_up_after_the_set_up_timeout() {
    // Accepts connections and never answers: a replica stuck in a GC pause or behind a dead proxy.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let replica = Replica {
        url: format!("http://127.0.0.1:{port}"),
        credentials: None,
    };
    let client = http_client(&TlsFiles::none("marathon"), Redirects::None).unwrap();
    let (trigger, mut backoff, mut attached) = (Arc::new(Notify::new()), Backoff::default(), false);
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        events::connection(
            &client,
            &replica,
            &trigger,
            &mut backoff,
            &mut attached,
            Duration::from_millis(300),
        ),
    )
    .await
    .expect("the set-up is bounded");
    assert!(
        matches!(ended, MarathonError::StreamSetup { .. }),
        "{ended}"
    );
    assert!(!attached);
    held.abort();
}
