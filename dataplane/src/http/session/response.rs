//! The backend side of an exchange: reading and checking response heads, forwarding response bodies,
//! ending the exchange, and what a failing backend turns into (retry, 502, 504, or an abort).

use bytes::BytesMut;

use super::{Action, BackendState, Body, CloseReason, HttpSession, Phase, ResponseState};
use crate::http::framing::{self, BodyKind, RequestContext};
use crate::http::head::{MAX_RESPONSE_HEAD_BYTES, Method, Version, parse_response};
use crate::http::rewrite::{self, ClientConnection};
use crate::http::status::ErrorStatus;

impl HttpSession {
    /// Forwards what the backend sent so far. Returns whether the session moved on.
    pub(super) fn pump_response(&mut self, out: &mut Vec<Action>) -> bool {
        loop {
            let Some(ex) = self.exchange.as_mut() else {
                return false;
            };
            let body = match &mut ex.response {
                ResponseState::Done => return false,
                ResponseState::Body(body) => body,
                ResponseState::Head => {
                    if self.backend_in.is_empty() {
                        return false;
                    }
                    ex.response_seen = true;
                    ex.retry_possible = false;
                    match self.response_head_step(out) {
                        HeadStep::Wait => return false,
                        HeadStep::Continue => continue,
                        HeadStep::Ended => return false,
                    }
                }
            };
            let Ok(chunk) = body.take(&mut self.backend_in) else {
                // The response has started: nothing to answer, only to cut.
                self.abort(CloseReason::BackendAborted, out);
                return false;
            };
            if matches!(body, Body::Done) {
                ex.response = ResponseState::Done;
            }
            if !chunk.is_empty() {
                self.send_client(chunk, out);
            }
            return false;
        }
    }

    /// Reads one response head from `backend_in`, if complete.
    fn response_head_step(&mut self, out: &mut Vec<Action>) -> HeadStep {
        let len = match self
            .response_scanner
            .find_end(&self.backend_in, MAX_RESPONSE_HEAD_BYTES)
        {
            Ok(Some(len)) => len,
            Ok(None) => return HeadStep::Wait,
            Err(_) => {
                self.fail_exchange(ErrorStatus::BadGateway, out);
                return HeadStep::Ended;
            }
        };
        self.response_scanner.reset();
        let head = self.backend_in.split_to(len).freeze();
        let Some(ex) = self.exchange.as_mut() else {
            return HeadStep::Ended;
        };
        let request = RequestContext {
            method: ex.method,
            version: ex.version,
            upgrade: ex.framing.upgrade,
        };
        let framing = match parse_response(&head, &mut self.response_head)
            .ok()
            .and_then(|()| framing::response(&self.response_head, &head, request).ok())
        {
            Some(framing) => framing,
            None => {
                self.fail_exchange(ErrorStatus::BadGateway, out);
                return HeadStep::Ended;
            }
        };

        let mut forwarded = BytesMut::new();
        if framing.informational {
            // An HTTP/1.0 client cannot take a 1xx (RFC 9110 §15.2).
            if ex.version == Version::Http11 {
                rewrite::response_head(
                    &self.response_head,
                    &framing,
                    &head,
                    ClientConnection::Interim,
                    &mut forwarded,
                );
                self.send_client(forwarded.freeze(), out);
            }
            return HeadStep::Continue;
        }
        if framing.switching {
            ex.status = 101;
            rewrite::response_head(
                &self.response_head,
                &framing,
                &head,
                ClientConnection::Upgrade,
                &mut forwarded,
            );
            self.send_client(forwarded.freeze(), out);
            self.start_tunnel(out);
            return HeadStep::Ended;
        }

        // A final response before the whole request body: the backend connection is not reused and
        // the client connection closes after the response. The body keeps flowing while the response
        // does (a backend may answer as it reads, echoing or streaming); whatever is left of it when
        // the response ends is not read.
        let early = !matches!(ex.request, Body::Done);
        ex.backend_reusable = framing.reusable && !early;
        ex.close_client = !ex.framing.keep_alive
            || early
            || framing.body == BodyKind::UntilClose
            || self.draining;
        ex.status = self.response_head.status;
        let connection = if ex.close_client {
            ClientConnection::Close
        } else if ex.version == Version::Http10 {
            ClientConnection::KeepHttp10
        } else {
            ClientConnection::Keep
        };
        ex.response = match Body::of(framing.body) {
            Body::Done => ResponseState::Done,
            body => ResponseState::Body(body),
        };
        rewrite::response_head(
            &self.response_head,
            &framing,
            &head,
            connection,
            &mut forwarded,
        );
        self.send_client(forwarded.freeze(), out);
        HeadStep::Continue
    }

    /// A `101` went to the client: hands both connections to the tunnel, with the bytes each side
    /// sent after its head.
    fn start_tunnel(&mut self, out: &mut Vec<Action>) {
        let to_client = self.backend_in.split().freeze();
        if !to_client.is_empty() {
            self.send_client(to_client, out);
        }
        let to_backend = self.client_in.split().freeze();
        if !to_backend.is_empty() {
            self.send_backend(to_backend, out);
        }
        if let Some(ex) = self.exchange.take() {
            out.push(Action::ExchangeDone(Box::new(ex.summary(None))));
        }
        self.phase = Phase::Finished;
        if self.timer.take().is_some() {
            out.push(Action::SetTimer(None));
        }
        out.push(Action::Tunnel);
    }

    /// Ends the exchange once both sides are complete. Returns whether the session goes on with the
    /// next request.
    pub(super) fn finish_if_done(&mut self, out: &mut Vec<Action>) -> bool {
        let done = self.exchange.as_mut().is_some_and(|ex| {
            let done = matches!(ex.response, ResponseState::Done);
            if done && !matches!(ex.request, Body::Done) {
                ex.request = Body::Abandoned;
            }
            done
        });
        if !done {
            return false;
        }
        let Some(ex) = self.exchange.take() else {
            return false;
        };
        // Bytes after a complete response: the connection is not in a known state.
        let clean = ex.backend_reusable && self.backend_in.is_empty();
        self.drop_backend(clean, out);
        let early = matches!(ex.request, Body::Abandoned);
        let close = ex.close_client;
        out.push(Action::ExchangeDone(Box::new(ex.summary(None))));
        if close {
            let reason = if early {
                CloseReason::EarlyResponse
            } else {
                CloseReason::Done
            };
            self.close(reason, early, out);
            return false;
        }
        self.phase = Phase::Idle;
        self.request_begun = false;
        true
    }

    /// The backend closed (`error`: failed) its connection.
    pub(super) fn backend_closed(&mut self, error: bool, out: &mut Vec<Action>) {
        let BackendState::Ready { reused } = self.backend else {
            return;
        };
        let Some(ex) = self.exchange.as_mut() else {
            return self.drop_backend(false, out);
        };
        match &ex.response {
            ResponseState::Head if !ex.response_seen && self.backend_in.is_empty() => {
                if reused && ex.retry_possible && !ex.retried {
                    // A pooled connection the backend had closed: send the request again on a new one.
                    ex.retried = true;
                    let route = ex.route;
                    self.drop_backend(false, out);
                    self.backend = BackendState::Connecting;
                    out.push(Action::ConnectBackend { route, fresh: true });
                } else {
                    self.fail_exchange(ErrorStatus::BadGateway, out);
                }
            }
            ResponseState::Head => self.fail_exchange(ErrorStatus::BadGateway, out),
            ResponseState::Body(Body::UntilClose) if !error => {
                ex.response = ResponseState::Done;
                ex.backend_reusable = false;
                self.drop_backend(false, out);
            }
            ResponseState::Body(_) => self.abort(CloseReason::BackendAborted, out),
            ResponseState::Done => self.drop_backend(false, out),
        }
    }

    /// The exchange failed before a final response reached the client: answers `status` and ends
    /// the exchange. If a final response had started, the client connection is cut instead.
    pub(super) fn fail_exchange(&mut self, status: ErrorStatus, out: &mut Vec<Action>) {
        let Some(ex) = self.exchange.take() else {
            self.reject(status, None, out);
            return;
        };
        if ex.status != 0 {
            self.exchange = Some(ex);
            return self.abort(CloseReason::BackendAborted, out);
        }
        self.drop_backend(false, out);
        let keep = status.may_keep_alive()
            && !self.draining
            && ex.version == Version::Http11
            && ex.framing.keep_alive
            && ex.framing.body == BodyKind::None
            && !self.client_eof;
        let response = status.response(keep, ex.method == Method::Head);
        let mut summary = ex.summary(Some(status));
        summary.response_bytes += response.len() as u64;
        self.unsent_client += response.len();
        out.push(Action::SendClient(response));
        out.push(Action::ExchangeDone(Box::new(summary)));
        if keep {
            self.phase = Phase::Idle;
            self.request_begun = false;
        } else {
            self.close(CloseReason::Rejected(status), true, out);
        }
    }
}

/// What reading a response head led to.
enum HeadStep {
    /// The head is not complete yet.
    Wait,
    /// A head was handled; look at the rest.
    Continue,
    /// The exchange ended (error or tunnel).
    Ended,
}
