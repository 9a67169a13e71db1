//! The client side of an exchange: reading, refusing or routing a request head, obtaining a backend,
//! and forwarding the request body.

use bytes::BytesMut;

use super::{
    Action, BackendState, Body, CloseReason, Exchange, ExchangeSummary, HttpSession, Phase,
    RETRY_BUFFER, RequestLine, ResponseState, Unavailable,
};
use crate::http::framing::{self, BodyKind, RequestFraming};
use crate::http::head::{HeadError, Method, Version, parse_request};
use crate::http::rewrite;
use crate::http::router::Router;
use crate::http::status::ErrorStatus;

/// What is known of a refused request whose head was parsed.
pub(super) struct Refused {
    pub line: RequestLine,
    pub method: Method,
    /// `None` when the framing itself was refused.
    pub framing: Option<RequestFraming>,
    pub version: Version,
}

impl HttpSession {
    /// Between exchanges: parses the next request head once it is complete, then refuses it, or routes
    /// it and starts its exchange. Returns whether the session moved on (so the caller continues).
    pub(super) fn start_request(&mut self, router: &Router, out: &mut Vec<Action>) -> bool {
        if !self.request_begun {
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            loop {
                if self.client_in.starts_with(b"\r\n") {
                    let _ = self.client_in.split_to(2);
                } else if self.client_in.starts_with(b"\n") {
                    let _ = self.client_in.split_to(1);
                } else {
                    break;
                }
            }
        }
        if self.client_in.is_empty() {
            if self.client_eof {
                let reason = if self.request_begun {
                    CloseReason::ClientAborted
                } else {
                    CloseReason::ClientClosed
                };
                self.close(reason, false, out);
            }
            return false;
        }
        if !self.request_begun {
            self.request_begun = true;
            out.push(Action::RequestStarted);
        }
        let len = match self
            .request_scanner
            .find_end(&self.client_in, self.config.max_header_bytes)
        {
            Ok(Some(len)) => len,
            Ok(None) => {
                if self.client_eof {
                    self.close(CloseReason::ClientAborted, false, out);
                }
                return false;
            }
            Err(_) => return self.reject(ErrorStatus::HeaderFieldsTooLarge, None, out),
        };
        self.request_scanner.reset();
        let head = self.client_in.split_to(len).freeze();
        if let Err(e) = parse_request(&head, self.config.max_headers, &mut self.request_head) {
            let status = match e {
                HeadError::TooLarge { .. } | HeadError::TooManyFields { .. } => {
                    ErrorStatus::HeaderFieldsTooLarge
                }
                HeadError::Version => ErrorStatus::VersionNotSupported,
                HeadError::Malformed(_) => ErrorStatus::BadRequest,
            };
            return self.reject(status, None, out);
        }
        let parsed = &self.request_head;
        let mut refused = Refused {
            line: RequestLine {
                head: head.clone(),
                method: parsed.method_span,
                target: parsed.target,
                host: None,
            },
            method: parsed.method,
            framing: None,
            version: parsed.version,
        };
        let framing = match framing::request(parsed, &head) {
            Ok(framing) => framing,
            Err(e) => return self.reject(e.status(), Some(refused), out),
        };
        refused.line.host = framing.authority;
        refused.framing = Some(framing);
        let route = router.route(
            framing.authority.map(|a| a.of(&head)),
            framing.path.of(&head),
            |name| parsed.value(&head, name),
        );
        let Some(route) = route else {
            return self.reject(ErrorStatus::NotFound, Some(refused), out);
        };

        let mut forwarded = BytesMut::new();
        rewrite::request_head(
            parsed,
            &framing,
            &head,
            &self.config.rewrite,
            &mut forwarded,
        );
        self.exchanges += 1;
        self.exchange = Some(Exchange {
            method: parsed.method,
            version: parsed.version,
            framing,
            route,
            line: refused.line,
            request: Body::of(framing.body),
            response: ResponseState::Head,
            response_seen: false,
            status: 0,
            close_client: false,
            backend_reusable: false,
            retained: vec![forwarded.freeze()],
            retained_len: 0,
            retry_possible: true,
            retried: false,
            request_bytes: len as u64,
            response_bytes: 0,
        });
        self.phase = Phase::Exchange;
        self.request_begun = false;
        self.backend = BackendState::Connecting;
        out.push(Action::ConnectBackend {
            route,
            fresh: false,
        });
        true
    }

    /// Answers a request the proxy refuses before any backend is involved. Returns whether the
    /// connection stays open (only 404/503 to a complete, bodiless HTTP/1.1 keep-alive request).
    pub(super) fn reject(
        &mut self,
        status: ErrorStatus,
        refused: Option<Refused>,
        out: &mut Vec<Action>,
    ) -> bool {
        let keep = refused.as_ref().is_some_and(|r| {
            r.version == Version::Http11
                && r.framing
                    .is_some_and(|f| f.keep_alive && f.body == BodyKind::None)
        }) && status.may_keep_alive()
            && !self.client_eof
            && !self.draining;
        let head_only = refused.as_ref().is_some_and(|r| r.method == Method::Head);
        let response = status.response(keep, head_only);
        let request_bytes = refused
            .as_ref()
            .map_or(self.client_in.len(), |r| r.line.head.len()) as u64;
        let summary = ExchangeSummary {
            status: status.code(),
            error: Some(status),
            route: None,
            request: refused.map(|r| r.line),
            request_bytes,
            response_bytes: response.len() as u64,
            retried: false,
        };
        self.exchanges += 1;
        self.request_begun = false;
        self.send_client(response, out);
        out.push(Action::ExchangeDone(Box::new(summary)));
        if !keep {
            self.close(CloseReason::Rejected(status), true, out);
        }
        keep
    }

    /// The worker obtained a backend connection: sends the request head (and, on a retry, the body
    /// bytes already sent once).
    pub(super) fn backend_ready(&mut self, reused: bool, out: &mut Vec<Action>) {
        if self.backend != BackendState::Connecting {
            return;
        }
        self.backend = BackendState::Ready { reused };
        let Some(ex) = &self.exchange else {
            return;
        };
        for chunk in &ex.retained {
            self.unsent_backend += chunk.len();
            out.push(Action::SendBackend(chunk.clone()));
        }
    }

    /// No backend: 503 (none available, queue timeout) or 502 (connect failed).
    pub(super) fn backend_unavailable(&mut self, why: Unavailable, out: &mut Vec<Action>) {
        if self.backend != BackendState::Connecting {
            return;
        }
        // Nothing was obtained, so nothing is to be released or closed.
        self.backend = BackendState::None;
        let status = match why {
            Unavailable::NoBackend | Unavailable::QueueTimeout => ErrorStatus::ServiceUnavailable,
            Unavailable::ConnectFailed => ErrorStatus::BadGateway,
        };
        self.fail_exchange(status, out);
    }

    /// Forwards the request body bytes received so far, and switches a long `Content-Length` body
    /// to splice.
    pub(super) fn pump_request(&mut self, out: &mut Vec<Action>) {
        if !self.backend_ready_now() {
            return;
        }
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        let buffered = matches!(ex.request, Body::Length(_));
        let Ok(chunk) = ex.request.take(&mut self.client_in) else {
            return self.fail_exchange(ErrorStatus::BadRequest, out);
        };
        if buffered && matches!(ex.request, Body::Splice(_)) {
            // The rest is spliced, so it cannot be sent again: no retry.
            ex.retry_possible = false;
            ex.retained.clear();
        }
        if !chunk.is_empty() {
            ex.request_bytes += chunk.len() as u64;
            if ex.retry_possible {
                ex.retained_len += chunk.len();
                if ex.retained_len > RETRY_BUFFER {
                    ex.retry_possible = false;
                    ex.retained.clear();
                } else {
                    ex.retained.push(chunk.clone());
                }
            }
            self.unsent_backend += chunk.len();
            out.push(Action::SendBackend(chunk));
        }
        let unfinished = !matches!(ex.request, Body::Done | Body::Abandoned);
        if unfinished && self.client_eof && self.client_in.is_empty() {
            self.abort(CloseReason::ClientAborted, out);
        }
    }
}
