//! The one place that knows the payload encoding (bincode 2.0.1 through its serde integration).
//!
//! bincode is no longer developed (3.0.0 is an empty release), so nothing outside this module names it:
//! replacing it with `postcard` means editing this file and bumping `wire::PROTOCOL_VERSION`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Upper bound on any single decoded value; guards allocations made from a hostile length inside a payload.
const DECODE_LIMIT: usize = crate::wire::MAX_FRAME_LEN;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode payload: {0}")]
    Encode(String),
    #[error("cannot decode payload: {0}")]
    Decode(String),
    #[error("payload has {trailing} unexpected trailing byte(s)")]
    TrailingBytes { trailing: usize },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value from the start of `bytes`, ignoring whatever follows (for peeking at a prefix).
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(bytes, config())
        .ok()
        .map(|(value, _)| value)
}

/// Decodes exactly one value that must fill `bytes` completely.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - used,
        });
    }
    Ok(value)
}
