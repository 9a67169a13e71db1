//! Timeouts, failing backends and retries.

use super::*;

fn timeout(h: &mut Harness, kind: TimerKind) -> Vec<Action> {
    h.event(Event::Timeout(kind))
}

#[test]
fn slow_request_heads_get_408_and_silent_connections_just_close() {
    let mut h = Harness::new();
    h.client(b"GET / HTTP/1.1\r\nHost: one");
    let actions = timeout(&mut h, TimerKind::RequestHead);
    assert!(to_client(&actions).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert_eq!(
        closed(&actions),
        Some((CloseReason::Rejected(ErrorStatus::RequestTimeout), true))
    );

    let mut h = Harness::new();
    h.event(Event::ClientData(b""));
    let actions = timeout(&mut h, TimerKind::RequestHead);
    assert!(
        to_client(&actions).is_empty(),
        "a connection that sent nothing gets no answer"
    );
    assert_eq!(
        closed(&actions),
        Some((CloseReason::RequestHeadTimeout, false))
    );

    // Between requests: the keep-alive timer, then the head timer from the next request's first byte.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(OK_HELLO);
    let actions = h.client(b"GET");
    assert!(has(
        &actions,
        &Action::SetTimer(Some(TimerKind::RequestHead))
    ));
    assert!(
        timeout(&mut h, TimerKind::KeepAlive).is_empty(),
        "a stale timer is ignored"
    );
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(OK_HELLO);
    let actions = timeout(&mut h, TimerKind::KeepAlive);
    assert_eq!(
        closed(&actions),
        Some((CloseReason::KeepAliveTimeout, false))
    );
    assert!(to_client(&actions).is_empty());
}

#[test]
fn slow_backends_get_504() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = timeout(&mut h, TimerKind::Response);
    assert!(to_client(&actions).starts_with("HTTP/1.1 504 Gateway Timeout\r\n"));
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(
        summaries(&actions)[0].error,
        Some(ErrorStatus::GatewayTimeout)
    );
    assert!(closed(&actions).is_some());

    // Inactivity while a request body is still coming is the client's fault: 408.
    let mut h = Harness::new();
    h.client(b"PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(false);
    let actions = timeout(&mut h, TimerKind::Idle);
    assert!(to_client(&actions).starts_with("HTTP/1.1 408 "));
    assert!(has(&actions, &Action::CloseBackend));

    // Inactivity once the response started: nothing can be answered, the client is cut.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let actions = timeout(&mut h, TimerKind::Idle);
    assert!(to_client(&actions).is_empty());
    assert_eq!(closed(&actions), Some((CloseReason::BackendAborted, false)));
    assert_eq!(summaries(&actions)[0].status, 200);
}

#[test]
fn invalid_responses_get_502() {
    for response in [
        &b"garbage\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
    ] {
        let mut h = Harness::new();
        h.client(GET_ONE);
        h.ready(false);
        let actions = h.backend(response);
        assert!(
            to_client(&actions).starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
            "{response:?}"
        );
        assert!(has(&actions, &Action::CloseBackend));
        assert_eq!(
            closed(&actions),
            Some((CloseReason::Rejected(ErrorStatus::BadGateway), true))
        );
    }
    // A head that never ends within the limit.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(b"HTTP/1.1 200 OK\r\n");
    let actions = h.backend(&vec![b'x'; crate::http::head::MAX_RESPONSE_HEAD_BYTES]);
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));
    // An incomplete head, then the backend closes.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(true);
    h.backend(b"HTTP/1.1 200 OK\r\n");
    let actions = h.event(Event::BackendEof);
    assert!(
        to_client(&actions).starts_with("HTTP/1.1 502 "),
        "no retry once a byte arrived"
    );
}

#[test]
fn no_backend_is_503_and_a_failed_connect_502() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    let actions = h.event(Event::BackendUnavailable(Unavailable::NoBackend));
    assert!(to_client(&actions).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    assert!(!has(&actions, &Action::CloseBackend) && !has(&actions, &Action::ReleaseBackend));
    assert_eq!(
        closed(&actions),
        None,
        "a bodiless request keeps its connection after 503"
    );
    assert_eq!(connects(&h.client(GET_ONE)), [(1, false)]);
    let actions = h.event(Event::BackendUnavailable(Unavailable::ConnectFailed));
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));
    assert!(closed(&actions).is_some());
}

#[test]
fn a_pooled_connection_that_died_is_retried_once_on_a_fresh_one() {
    let mut h = Harness::new();
    h.client(b"POST /any HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbo");
    let first = to_backend(&h.ready(true));
    let first = [first, to_backend(&h.client(b"dy"))].concat();
    let actions = h.event(Event::BackendEof);
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == Action::CloseBackend)
            .count(),
        1
    );
    assert_eq!(
        connects(&actions),
        [(3, true)],
        "a fresh connection, not another pooled one"
    );
    assert!(to_client(&actions).is_empty());
    let again = to_backend(&h.ready(false));
    assert_eq!(again, first, "the same request bytes again");
    let actions = h.backend(OK_HELLO);
    assert!(summaries(&actions)[0].retried);

    // Only once: the fresh connection failing is a 502.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(true);
    h.event(Event::BackendError);
    h.ready(true);
    let actions = h.event(Event::BackendError);
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));
}

#[test]
fn no_retry_on_a_new_connection_or_past_the_retry_buffer() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.event(Event::BackendEof);
    assert!(connects(&actions).is_empty());
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));

    let mut h = Harness::new();
    let length = RETRY_BUFFER + 1;
    h.client(
        format!("PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
    );
    h.ready(true);
    h.client(&vec![b'x'; length]);
    let actions = h.event(Event::BackendEof);
    assert!(connects(&actions).is_empty());
    assert!(to_client(&actions).starts_with("HTTP/1.1 502 "));

    // Spliced bodies are gone too.
    let mut h = Harness::new();
    h.client(
        format!(
            "PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            SPLICE_THRESHOLD * 2
        )
        .as_bytes(),
    );
    h.ready(true);
    assert!(matches!(h.session.client_read(), Read::Splice(_)));
    let actions = h.event(Event::BackendEof);
    assert!(connects(&actions).is_empty());
}

#[test]
fn truncated_responses_cut_the_client() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    let actions = h.event(Event::BackendEof);
    assert_eq!(closed(&actions), Some((CloseReason::BackendAborted, false)));
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(summaries(&actions)[0].status, 200);

    // A reset during a close-delimited body is a truncation, not its end.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(b"HTTP/1.1 200 OK\r\n\r\nabc");
    let actions = h.event(Event::BackendError);
    assert_eq!(closed(&actions), Some((CloseReason::BackendAborted, false)));
}

#[test]
fn bytes_after_a_complete_response_spoil_the_backend_connection() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\n");
    assert!(to_client(&actions).ends_with("\r\n\r\nA"));
    assert!(has(&actions, &Action::CloseBackend) && !has(&actions, &Action::ReleaseBackend));
    assert_eq!(closed(&actions), None, "the client is fine");
}

#[test]
fn client_failures_mid_exchange() {
    let mut h = Harness::new();
    h.client(b"PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(false);
    let actions = h.event(Event::ClientEof);
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(closed(&actions), Some((CloseReason::ClientAborted, false)));

    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.event(Event::ClientError);
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(closed(&actions), Some((CloseReason::ClientAborted, false)));
    assert_eq!(summaries(&actions)[0].status, 0);

    // A client gone while the worker looks for a backend: nothing to close on that side yet.
    let mut h = Harness::new();
    h.client(GET_ONE);
    let actions = h.event(Event::ClientError);
    assert!(
        has(&actions, &Action::CloseBackend),
        "the pending connect is abandoned"
    );
    let late = h.event(Event::BackendReady { reused: false });
    assert!(late.is_empty());
}
