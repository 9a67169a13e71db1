//! Messages between the controlplane and its dataplanes, and their framing on the Unix socket.
//!
//! A frame is a 4-byte big-endian payload length followed by the encoded [`Message`]. Both sides send
//! [`Message::Hello`] first; a peer with another [`PROTOCOL_VERSION`] is refused with a clear error.
//! To keep that check possible across versions, `Hello` stays the first variant of `Message` and
//! `protocol_version` stays its first field: the decoder reads them before anything that may change.
//!
//! Decoding never panics on hostile input: oversized, truncated and garbage frames give a [`WireError`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::model::Snapshot;

/// Version of this protocol; bumped on any incompatible change to [`Message`] or the payload encoding.
/// 2: [`Message::Ack`] carries the listeners the dataplane could not open.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest payload accepted. A 10,000-service / 100,000-backend snapshot is about 4 MiB.
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Everything that crosses the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message each way. Must stay variant 0 (see the module docs).
    Hello(Hello),
    /// The controlplane's current routing state, pushed whole.
    Snapshot(Box<Snapshot>),
    /// The dataplane applied `version` on every worker, except the listeners in `failed_listeners`,
    /// which it could not open and keeps retrying. Sent again for the same version whenever that list
    /// changes (a retry bound one, say).
    Ack {
        version: u64,
        failed_listeners: Vec<ListenerFailure>,
    },
    /// The dataplane refused `version` and keeps serving its previous snapshot.
    Nack {
        version: u64,
        reason: String,
    },
    /// Liveness probe; the receiver answers with the same nonce.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
}

impl Message {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Snapshot(_) => "snapshot",
            Message::Ack { .. } => "ack",
            Message::Nack { .. } => "nack",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
        }
    }
}

/// A listener of the applied snapshot that a dataplane could not open: everything else of the snapshot
/// is served, this address is not until a retry binds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListenerFailure {
    /// The listener's name in the snapshot.
    pub name: String,
    pub address: SocketAddr,
    /// The operating system's word for it: `cannot bind: Address already in use (os error 98)`.
    pub error: String,
}

impl Message {
    /// An ACK of `version` with every listener open.
    pub fn ack(version: u64) -> Self {
        Message::Ack {
            version,
            failed_listeners: Vec::new(),
        }
    }
}

/// Opening message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must stay the first field (see the module docs).
    pub protocol_version: u32,
    pub role: Role,
    /// Free-form identity for logs and status: host name and pid, for example.
    pub name: String,
    /// The version the sender has applied (dataplane) or serves (controlplane); 0 for none.
    pub applied_version: u64,
    /// Content hash of that version; 0 for none.
    pub applied_hash: u64,
}

impl Hello {
    pub fn new(
        role: Role,
        name: impl Into<String>,
        applied_version: u64,
        applied_hash: u64,
    ) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            role,
            name: name.into(),
            applied_version,
            applied_hash,
        }
    }

    /// Refuses a peer that speaks another protocol version.
    pub fn check_compatible(&self) -> Result<(), WireError> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(WireError::ProtocolMismatch {
                ours: PROTOCOL_VERSION,
                theirs: self.protocol_version,
            });
        }
        Ok(())
    }
}

/// Which end of the socket sent a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Controlplane,
    Dataplane,
}

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] CodecError),
    #[error(
        "peer speaks protocol version {theirs}, this build speaks {ours}; upgrade both sides together"
    )]
    ProtocolMismatch { ours: u32, theirs: u32 },
    #[error("unexpected {got} message: {expected}")]
    Unexpected {
        got: &'static str,
        expected: &'static str,
    },
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// Borrowing twin of [`Message`] for encoding without a copy: the same variants in the same order, so
/// it produces the same bytes (`Box<T>` serializes as `T`).
#[derive(Serialize)]
enum MessageRef<'a> {
    #[allow(dead_code)]
    Hello(&'a Hello),
    Snapshot(&'a Snapshot),
}

/// Encodes `message` as one frame: length prefix plus payload.
pub fn encode_frame(message: &Message) -> Result<Vec<u8>, WireError> {
    frame_payload(codec::encode(message)?)
}

/// Encodes `Message::Snapshot(snapshot)` without cloning the snapshot (100,000 backends are worth it).
pub fn encode_snapshot_frame(snapshot: &Snapshot) -> Result<Vec<u8>, WireError> {
    frame_payload(codec::encode(&MessageRef::Snapshot(snapshot))?)
}

fn frame_payload(payload: Vec<u8>) -> Result<Vec<u8>, WireError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let mut frame = Vec::with_capacity(LEN_PREFIX + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes one complete frame that must fill `bytes` exactly (a state file, for example).
pub fn decode_frame(bytes: &[u8]) -> Result<Message, WireError> {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    match decoder.next_message()? {
        Some(message) if decoder.buffered() == 0 => Ok(message),
        Some(_) => Err(CodecError::TrailingBytes {
            trailing: decoder.buffered(),
        }
        .into()),
        None => Err(decoder.truncation()),
    }
}

/// Incremental frame decoder: feed it bytes as they arrive, take out complete messages.
///
/// It holds no I/O, so the blocking dataplane subscriber and the async controlplane share it.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`; compacted lazily to avoid a memmove per message.
    start: usize,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::with_max_len(MAX_FRAME_LEN)
    }

    /// A decoder that refuses payloads longer than `max_len` (at most [`MAX_FRAME_LEN`]).
    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed by a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of sync and the session must be closed.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let unread = &self.buf[self.start..];
        if unread.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([unread[0], unread[1], unread[2], unread[3]]) as usize;
        if len > self.max_len {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        if unread.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let payload = &unread[LEN_PREFIX..LEN_PREFIX + len];
        let message = match codec::decode(payload) {
            Ok(message) => message,
            Err(e) => return Err(mismatch_in(payload).unwrap_or(WireError::Malformed(e))),
        };
        self.start += LEN_PREFIX + len;
        if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(message))
    }

    /// The error to report when the stream ends: `Truncated` if a partial frame is buffered.
    pub fn truncation(&self) -> WireError {
        let unread = &self.buf[self.start..];
        let need = if unread.len() >= LEN_PREFIX {
            LEN_PREFIX + u32::from_be_bytes([unread[0], unread[1], unread[2], unread[3]]) as usize
        } else {
            LEN_PREFIX
        };
        WireError::Truncated {
            have: unread.len(),
            need,
        }
    }
}

/// A frame that does not decode but starts like a `Hello` of another protocol version: report the
/// version mismatch, which tells the operator what to do, rather than "malformed".
fn mismatch_in(payload: &[u8]) -> Option<WireError> {
    let (variant, version): (u32, u32) = codec::decode_prefix(payload)?;
    (variant == HELLO_VARIANT && version != PROTOCOL_VERSION).then_some(
        WireError::ProtocolMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        },
    )
}

/// Index of `Message::Hello` in the encoding.
const HELLO_VARIANT: u32 = 0;

/// Blocking read of one message; `Ok(None)` on a clean end of stream between frames.
pub fn read_message(
    reader: &mut impl Read,
    decoder: &mut FrameDecoder,
) -> Result<Option<Message>, WireError> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(message) = decoder.next_message()? {
            return Ok(Some(message));
        }
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if decoder.buffered() == 0 {
                Ok(None)
            } else {
                Err(decoder.truncation())
            };
        }
        decoder.feed(&chunk[..n]);
    }
}

/// Blocking write of one message.
pub fn write_message(writer: &mut impl Write, message: &Message) -> Result<(), WireError> {
    writer.write_all(&encode_frame(message)?)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Backend, BackendState, Balance, Cluster, ClusterHttp, HttpListener, Listener, PathMatch,
        Route, Timeouts,
    };
    use proptest::prelude::*;

    fn snapshot(services: usize) -> Snapshot {
        let clusters = (0..services)
            .map(|i| Cluster {
                name: format!("svc{i}"),
                balance: if i % 2 == 0 {
                    Balance::RoundRobin
                } else {
                    Balance::LeastConn
                },
                timeouts: Timeouts::default(),
                max_connections: 8192,
                backends: (0..3)
                    .map(|b| Backend {
                        address: format!("10.0.{}.{}:{}", i % 250, b + 1, 8000 + b)
                            .parse()
                            .unwrap(),
                        weight: 500,
                        max_connections: if b == 0 { None } else { Some(b as u32) },
                        state: if b == 2 {
                            BackendState::Draining
                        } else {
                            BackendState::Active
                        },
                    })
                    .collect(),
                http: Some(ClusterHttp::default()),
            })
            .collect();
        let http_address = "127.0.0.1:19999".parse().unwrap();
        let mut listeners: Vec<Listener> = (0..services)
            .map(|i| {
                Listener::tcp(
                    format!("svc{i}"),
                    format!("127.0.0.1:{}", 20000 + i).parse().unwrap(),
                    format!("svc{i}"),
                )
            })
            .collect();
        listeners.push(Listener::http(
            "http",
            http_address,
            HttpListener::default(),
        ));
        let routes = (0..services)
            .map(|i| Route {
                listener: http_address,
                name: format!("svc{i}"),
                hosts: vec![format!("svc{i}.example.com")],
                paths: vec!["/".into()],
                path_match: PathMatch::Prefix,
                header: None,
                cluster: format!("svc{i}"),
            })
            .collect();
        Snapshot::with_routes(42, listeners, routes, clusters).unwrap()
    }

    fn all_kinds() -> Vec<Message> {
        vec![
            Message::Hello(Hello::new(Role::Dataplane, "dp-1", 3, 0xfeed)),
            Message::Snapshot(Box::new(snapshot(20))),
            Message::ack(9),
            Message::Ack {
                version: 10,
                failed_listeners: vec![ListenerFailure {
                    name: "web".into(),
                    address: "127.0.0.1:80".parse().unwrap(),
                    error: "cannot bind: Permission denied (os error 13)".into(),
                }],
            },
            Message::Nack {
                version: 9,
                reason: "listener 127.0.0.1:80: permission denied".into(),
            },
            Message::Ping { nonce: 1 },
            Message::Pong { nonce: u64::MAX },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in all_kinds() {
            let frame = encode_frame(&message).unwrap();
            assert_eq!(decode_frame(&frame).unwrap(), message);
        }
    }

    #[test]
    fn decoded_snapshot_still_validates() {
        let frame = encode_frame(&Message::Snapshot(Box::new(snapshot(500)))).unwrap();
        let Message::Snapshot(s) = decode_frame(&frame).unwrap() else {
            panic!("not a snapshot")
        };
        s.validate().unwrap();
    }

    #[test]
    fn stream_of_frames_split_at_every_byte() {
        let messages = all_kinds();
        let stream: Vec<u8> = messages
            .iter()
            .flat_map(|m| encode_frame(m).unwrap())
            .collect();
        let mut decoder = FrameDecoder::new();
        let mut out = Vec::new();
        for byte in &stream {
            decoder.feed(std::slice::from_ref(byte));
            while let Some(m) = decoder.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, messages);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn truncated_frame_is_typed() {
        let frame = encode_frame(&Message::Ping { nonce: 5 }).unwrap();
        for cut in 0..frame.len() {
            let err = decode_frame(&frame[..cut]).unwrap_err();
            assert!(
                matches!(err, WireError::Truncated { have, .. } if have == cut),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_payload() {
        let mut decoder = FrameDecoder::new();
        decoder.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_message(),
            Err(WireError::FrameTooLarge { .. })
        ));
        let mut small = FrameDecoder::with_max_len(16);
        small.feed(&encode_frame(&Message::Snapshot(Box::new(snapshot(1)))).unwrap());
        assert!(matches!(
            small.next_message(),
            Err(WireError::FrameTooLarge { max: 16, .. })
        ));
    }

    #[test]
    fn empty_and_trailing_frames_are_errors() {
        assert!(matches!(
            decode_frame(&[0, 0, 0, 0]),
            Err(WireError::EmptyFrame)
        ));
        let mut frame = encode_frame(&Message::ack(1)).unwrap();
        frame.extend_from_slice(&[0, 0]);
        assert!(matches!(decode_frame(&frame), Err(WireError::Malformed(_))));
        // A frame whose declared payload is longer than the message it holds.
        let payload = codec::encode(&Message::ack(1)).unwrap();
        let mut padded = ((payload.len() + 3) as u32).to_be_bytes().to_vec();
        padded.extend_from_slice(&payload);
        padded.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode_frame(&padded),
            Err(WireError::Malformed(CodecError::TrailingBytes {
                trailing: 3
            }))
        ));
    }

    #[test]
    fn protocol_mismatch_is_reported_with_both_versions() {
        let mut hello = Hello::new(Role::Controlplane, "cp", 0, 0);
        hello.check_compatible().unwrap();
        hello.protocol_version = PROTOCOL_VERSION + 1;
        let frame = encode_frame(&Message::Hello(hello)).unwrap();
        let Message::Hello(decoded) = decode_frame(&frame).unwrap() else {
            panic!()
        };
        let err = decoded.check_compatible().unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("protocol version {}", PROTOCOL_VERSION + 1))
        );
    }

    #[test]
    fn a_future_hello_of_another_shape_is_reported_as_a_version_mismatch() {
        // Variant 0 (Hello), protocol version 9, then fields this build does not know.
        let payload = codec::encode(&(0u32, 9u32, "new-field", [1u8, 2, 3], 77u64)).unwrap();
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        match decode_frame(&frame) {
            Err(WireError::ProtocolMismatch { ours, theirs }) => {
                assert_eq!((ours, theirs), (PROTOCOL_VERSION, 9));
            }
            other => panic!("expected a version mismatch, got {other:?}"),
        }
    }

    #[test]
    fn borrowed_snapshot_encoding_is_byte_identical() {
        let s = snapshot(30);
        assert_eq!(
            encode_snapshot_frame(&s).unwrap(),
            encode_frame(&Message::Snapshot(Box::new(s))).unwrap()
        );
    }

    #[test]
    fn blocking_helpers_read_what_was_written_and_see_truncation() {
        let mut bytes = Vec::new();
        for m in all_kinds() {
            write_message(&mut bytes, &m).unwrap();
        }
        let mut reader = io::Cursor::new(bytes.clone());
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        while let Some(m) = read_message(&mut reader, &mut decoder).unwrap() {
            got.push(m);
        }
        assert_eq!(got, all_kinds());
        let mut cut = io::Cursor::new(bytes[..bytes.len() - 1].to_vec());
        let mut decoder = FrameDecoder::new();
        let err = loop {
            match read_message(&mut cut, &mut decoder) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("truncation not detected"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, WireError::Truncated { .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder, and every error is typed.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::new();
            decoder.feed(&bytes);
            while let Ok(Some(_)) = decoder.next_message() {}
        }

        /// A valid length prefix followed by random payload bytes is refused, never a panic.
        #[test]
        fn garbage_payload_is_malformed(payload in proptest::collection::vec(any::<u8>(), 1..256)) {
            let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&payload);
            let _ = decode_frame(&frame);
        }

        /// Random ACK/NACK/ping contents round trip.
        #[test]
        fn scalar_messages_round_trip(version in any::<u64>(), reason in ".{0,64}", nonce in any::<u64>()) {
            for m in [
                Message::ack(version),
                Message::Ack {
                    version,
                    failed_listeners: vec![ListenerFailure {
                        name: reason.clone(),
                        address: SocketAddr::from(([127, 0, 0, 1], (nonce % 65536) as u16)),
                        error: reason.clone(),
                    }],
                },
                Message::Nack { version, reason: reason.clone() },
                Message::Ping { nonce },
                Message::Pong { nonce },
            ] {
                prop_assert_eq!(decode_frame(&encode_frame(&m).unwrap()).unwrap(), m);
            }
        }

        /// Any single flipped byte in a snapshot frame yields an error or a snapshot that fails validation
        /// (or, if the flip hit a don't-care position, the identical snapshot); never a panic.
        #[test]
        fn bit_flips_are_caught(pos in 0usize..2000, bit in 0u8..8) {
            let original = snapshot(10);
            let mut frame = encode_frame(&Message::Snapshot(Box::new(original.clone()))).unwrap();
            let pos = LEN_PREFIX + pos % (frame.len() - LEN_PREFIX);
            frame[pos] ^= 1 << bit;
            if let Ok(Message::Snapshot(s)) = decode_frame(&frame) {
                prop_assert!(s.validate().is_err() || *s == original || s.version != original.version);
            }
        }
    }
}
