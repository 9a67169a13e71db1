//! Bodies: streamed in both codings, spliced when long, `Expect: 100-continue`, flow control.

use proptest::prelude::*;

use super::*;

#[test]
fn chunked_request_bodies_stream_as_they_came() {
    let mut h = Harness::new();
    h.client(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    let actions = h.ready(false);
    let sent = to_backend(&actions);
    assert!(sent.ends_with(b"Transfer-Encoding: chunked\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\r\n5\r\nhel"));
    assert!(
        has(&actions, &Action::SetTimer(Some(TimerKind::Idle))),
        "body in transit"
    );
    assert_eq!(
        to_backend(&h.client(b"lo\r\n0\r\nX-Trailer: t\r\n")),
        b"lo\r\n0\r\nX-Trailer: t\r\n"
    );
    let actions = h.client(b"\r\nGET / HTTP/1.1\r\n");
    assert_eq!(
        to_backend(&actions),
        b"\r\n",
        "the pipelined request stays behind"
    );
    assert!(has(&actions, &Action::SetTimer(Some(TimerKind::Response))));
    let actions =
        h.backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    assert!(has(&actions, &Action::ReleaseBackend));
}

#[test]
fn broken_chunked_request_bodies_get_400_and_reach_nothing_more() {
    let mut h = Harness::new();
    h.client(b"POST /any HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.ready(false);
    let actions = h.client(b"5\nhello\r\n0\r\n\r\n");
    assert!(to_backend(&actions).is_empty());
    assert!(to_client(&actions).starts_with("HTTP/1.1 400 "));
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(
        closed(&actions),
        Some((CloseReason::Rejected(ErrorStatus::BadRequest), true))
    );
}

#[test]
fn broken_chunked_responses_cut_the_client() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX");
    assert!(to_client(&actions).starts_with("HTTP/1.1 200 OK"));
    assert!(has(&actions, &Action::CloseBackend));
    assert_eq!(closed(&actions), Some((CloseReason::BackendAborted, false)));
}

#[test]
fn long_request_bodies_move_with_splice() {
    let mut h = Harness::new();
    let length = SPLICE_THRESHOLD * 4;
    h.client(
        format!("PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n0123").as_bytes(),
    );
    assert_eq!(
        h.session.client_read(),
        Read::Buffered,
        "until the backend is ready"
    );
    let actions = h.ready(false);
    assert!(
        to_backend(&actions).ends_with(b"\r\n\r\n0123"),
        "buffered body bytes go first"
    );
    assert_eq!(h.session.client_read(), Read::Splice(length - 4));
    // A receive that completed after the switch: its bytes are sent and the splice shrinks.
    let actions = h.client(b"4567");
    assert_eq!(to_backend(&actions), b"4567");
    assert_eq!(h.session.client_read(), Read::Splice(length - 8));
    h.event(Event::Spliced {
        direction: Direction::ClientToBackend,
        bytes: 1000,
    });
    assert_eq!(h.session.client_read(), Read::Splice(length - 1008));
    let actions = h.event(Event::Spliced {
        direction: Direction::ClientToBackend,
        bytes: length - 1008,
    });
    assert!(has(&actions, &Action::SetTimer(Some(TimerKind::Response))));
    assert_eq!(h.session.client_read(), Read::Buffered);

    // The response also splices; the bytes after it are the next request's.
    let actions =
        h.backend(format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nxy").as_bytes());
    assert!(to_client(&actions).ends_with("\r\n\r\nxy"));
    assert_eq!(h.session.backend_read(), Read::Splice(length - 2));
    let actions = h.event(Event::Spliced {
        direction: Direction::BackendToClient,
        bytes: length - 2,
    });
    assert!(has(&actions, &Action::ReleaseBackend));
    let summary = &summaries(&actions)[0];
    assert!(summary.request_bytes > length && summary.response_bytes > length);
}

#[test]
fn short_bodies_do_not_splice() {
    let mut h = Harness::new();
    h.client(
        format!("PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: {SPLICE_THRESHOLD}\r\n\r\n")
            .as_bytes(),
    );
    h.ready(false);
    assert_eq!(h.session.client_read(), Read::Buffered);
}

#[test]
fn expect_100_continue() {
    let mut h = Harness::new();
    h.client(b"PUT /any HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let sent = String::from_utf8(to_backend(&h.ready(false))).unwrap();
    assert!(
        sent.contains("Expect: 100-continue\r\n"),
        "the backend decides: {sent}"
    );
    let actions = h.backend(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(to_client(&actions), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(to_backend(&h.client(b"body")), b"body");
    let actions = h.backend(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert!(has(&actions, &Action::ReleaseBackend));
    assert_eq!(closed(&actions), None);
}

#[test]
fn a_final_answer_before_the_body_closes_after_the_response() {
    let mut h = Harness::new();
    h.client(b"PUT /any HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno");
    assert_eq!(
        to_client(&actions),
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    );
    assert!(
        has(&actions, &Action::CloseBackend),
        "the backend may still expect the body"
    );
    assert_eq!(closed(&actions), Some((CloseReason::EarlyResponse, true)));
    assert!(
        to_backend(&h.client(b"body")).is_empty(),
        "the body is never sent"
    );
}

#[test]
fn a_response_that_streams_before_the_request_body_ends_keeps_the_body_flowing() {
    // An echoing backend answers as the body arrives: stopping the body there would stall both.
    let mut h = Harness::new();
    h.client(b"PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nabcd");
    h.ready(false);
    let actions = h.backend(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabcd");
    assert!(to_client(&actions).ends_with("abcd"), "{actions:?}");
    assert_eq!(closed(&actions), None);
    assert_eq!(
        h.session.client_read(),
        Read::Buffered,
        "the rest of the body is read"
    );
    assert_eq!(to_backend(&h.client(b"efgh")), b"efgh");
    let actions = h.backend(b"efgh");
    assert_eq!(to_client_bytes(&actions), b"efgh");
    assert!(
        has(&actions, &Action::CloseBackend),
        "a response that began early never pools its connection"
    );
    assert_eq!(
        closed(&actions),
        Some((CloseReason::Done, false)),
        "the response said Connection: close, the body was complete"
    );
}

#[test]
fn reading_pauses_while_too_much_is_unsent() {
    let mut h = Harness::new();
    h.client(
        format!("PUT /any HTTP/1.1\r\nHost: a\r\nContent-Length: {SPLICE_THRESHOLD}\r\n\r\n")
            .as_bytes(),
    );
    h.ready(false);
    h.client(&vec![b'x'; BUFFER_LIMIT / 2]);
    assert_eq!(h.session.client_read(), Read::Buffered);
    h.client(&vec![b'x'; BUFFER_LIMIT / 2 - 10]);
    assert_eq!(
        h.session.client_read(),
        Read::Paused,
        "the backend has not taken the bytes yet"
    );
    h.event(Event::BackendSent(BUFFER_LIMIT));
    assert_eq!(h.session.client_read(), Read::Buffered);

    // The same for responses toward a slow client.
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.backend(format!("HTTP/1.1 200 OK\r\nContent-Length: {SPLICE_THRESHOLD}\r\n\r\n").as_bytes());
    assert_eq!(h.session.backend_read(), Read::Buffered);
    h.backend(&vec![b'y'; BUFFER_LIMIT - 10]);
    assert_eq!(h.session.backend_read(), Read::Paused);
    h.event(Event::ClientSent(BUFFER_LIMIT));
    assert_eq!(h.session.backend_read(), Read::Buffered);
}

#[test]
fn a_pipelining_client_reads_ahead_only_so_far() {
    let mut h = Harness::new();
    h.client(GET_ONE);
    h.ready(false);
    h.client(&vec![b'G'; BUFFER_LIMIT]);
    assert_eq!(h.session.client_read(), Read::Paused);
}

/// Requests with bodies of both codings, and their responses.
fn exchange_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..4),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..60),
    )
        .prop_map(|(chunks, chunked, response_body)| {
            let mut request = b"POST /any HTTP/1.1\r\nHost: a\r\n".to_vec();
            if chunked {
                request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in &chunks {
                    request.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    request.extend_from_slice(c);
                    request.extend_from_slice(b"\r\n");
                }
                request.extend_from_slice(b"0\r\n\r\n");
            } else {
                let body: Vec<u8> = chunks.concat();
                request.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                request.extend_from_slice(&body);
            }
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                response_body.len()
            )
            .into_bytes();
            response.extend_from_slice(&response_body);
            (request, response)
        })
}

/// Everything forwarded: to the backend, to the client, and the number of exchanges done.
type Forwarded = (Vec<u8>, Vec<u8>, usize);

fn record(actions: &[Action], seen: &mut Forwarded) {
    seen.0.extend(to_backend(actions));
    seen.1.extend(to_client_bytes(actions));
    seen.2 += summaries(actions).len();
}

/// Runs pipelined exchanges with the client's and the backend's bytes cut at the given points. The
/// backend answers each request once it has all of it.
fn run(
    exchanges: &[(Vec<u8>, Vec<u8>)],
    client_cuts: &[usize],
    backend_cuts: &[usize],
) -> Forwarded {
    let mut h = Harness::new();
    let client: Vec<u8> = exchanges.iter().flat_map(|(r, _)| r.clone()).collect();
    let mut seen = (Vec::new(), Vec::new(), 0);
    let mut responses = exchanges.iter().map(|(_, r)| r);
    let mut cuts: Vec<usize> = client_cuts.iter().map(|c| c % (client.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(client.len());
    let mut at = 0;
    for end in cuts {
        let end = end.max(at);
        let actions = h.client(&client[at..end]);
        at = end;
        record(&actions, &mut seen);
        // Serve what the session asks for, as far as the client's bytes so far allow.
        while let Some(ex) = &h.session.exchange {
            if h.session.backend == BackendState::Connecting {
                let actions = h.ready(true);
                record(&actions, &mut seen);
                continue;
            }
            if !matches!(ex.request, Body::Done) {
                break;
            }
            let response = responses.next().unwrap();
            let mut from = 0;
            for cut in backend_cuts
                .iter()
                .map(|c| c % (response.len() + 1))
                .chain([response.len()])
            {
                let cut = cut.max(from);
                let actions = h.backend(&response[from..cut]);
                from = cut;
                record(&actions, &mut seen);
            }
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the cuts, pipelined exchanges forward the same bytes both ways as uncut.
    #[test]
    fn cuts_do_not_change_what_is_forwarded(
        exchanges in prop::collection::vec(exchange_strategy(), 1..4),
        client_cuts in prop::collection::vec(any::<usize>(), 0..8),
        backend_cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        // The backend answers only after the whole request is sent, so feed whole requests for the
        // reference run.
        let whole = run(&exchanges, &[], &[]);
        prop_assert_eq!(whole.2, exchanges.len());
        let expected_client: Vec<u8> = exchanges.iter().flat_map(|(_, r)| r.clone()).collect();
        prop_assert_eq!(&whole.1, &expected_client);
        let cut = run(&exchanges, &client_cuts, &backend_cuts);
        prop_assert_eq!(cut, whole);
    }
}

#[test]
fn a_client_that_does_not_read_its_answers_is_not_answered_further() {
    let mut h = Harness::new();
    let request = b"GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n";
    let answer_len = to_client(&h.client(request)).len();
    let many: Vec<u8> = request.repeat(2 * BUFFER_LIMIT / answer_len + 10);
    let actions = h.client(&many);
    let answered = summaries(&actions).len();
    assert!(
        answered < many.len() / request.len(),
        "answering stops at the buffer limit"
    );
    assert_eq!(h.session.client_read(), Read::Paused);
    // Once the client reads, answering goes on.
    let actions = h.event(Event::ClientSent(BUFFER_LIMIT * 4));
    assert!(!summaries(&actions).is_empty());
}
