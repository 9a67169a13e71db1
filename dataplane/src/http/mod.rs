//! The HTTP/1.1 engine: sans-IO (no ring, no sockets), so every rule here is unit-tested with byte strings.
//!
//! - [`head`]: finding and tokenizing request and response heads (`httparse`), as spans into the bytes.
//! - [`framing`]: body lengths and the smuggling rules: which messages are refused, with which status.
//! - [`chunked`]: the streaming chunked-coding scanner.
//! - [`rewrite`]: the heads that go to the backend and back to the client (hop-by-hop fields,
//!   `X-Forwarded-*`).
//! - [`router`]: per-listener routing by header, host and path.
//! - [`status`]: the proxy's own error answers.
//! - [`session`]: the per-client-connection state machine the worker drives.
//! - [`fuzzing`]: the fuzz targets' entry points (`dataplane/fuzz/`) and their corpus replay test.

pub mod chunked;
pub mod framing;
pub mod fuzzing;
pub mod head;
pub mod rewrite;
pub mod router;
pub mod session;
pub mod status;

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
