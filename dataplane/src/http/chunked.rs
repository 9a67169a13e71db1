//! A streaming, strict scanner for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The proxy forwards chunked bodies as they came, so it never copies chunk data: the decoder only finds
//! where the framing is, and where the message ends, across reads split at any byte. Data runs are
//! skipped by arithmetic; only the few framing bytes are looked at one by one.
//!
//! Strict, because a backend that reads the framing differently from us is a smuggling vector:
//! chunk sizes are 1 to 16 hex digits; whitespace after the size only before a `;`; extensions are
//! allowed (and bounded with the size line at [`MAX_CHUNK_LINE`]) but must be printable with balanced
//! quotes; CRLF only (a bare LF or CR anywhere in the framing is an error); the CRLF after each chunk's
//! data is required; trailer fields are `token ":" value` lines (no obs-fold, no space before the
//! colon), bounded at [`MAX_TRAILER_BYTES`] in all, and forwarded as they are, never merged into the
//! head.

use std::ops::Range;

use super::is_token;

/// Longest chunk-size line (size, extensions, CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes (all trailer lines, without the final CRLF).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most hex digits in a chunk size (16 digits fill a u64, so the size cannot overflow).
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    BadSize,
    #[error("chunk size longer than 16 hex digits")]
    SizeTooLong,
    #[error("invalid chunk extension")]
    BadExtension,
    #[error("chunk-size line longer than {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("invalid trailer field")]
    BadTrailer,
    #[error("trailer fields larger than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size's hex digits.
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size: only a `;` may follow.
    SizeSpace {
        size: u64,
    },
    /// Inside chunk extensions.
    Extension {
        size: u64,
        quoted: bool,
        escaped: bool,
    },
    /// Saw the CR ending the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// What one [`ChunkedDecoder::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input that belong to the message so far (framing and data).
    pub consumed: usize,
    /// Chunk data within the consumed bytes (always at their end).
    pub data: Option<Range<usize>>,
    /// The message ended (the final CRLF is within the consumed bytes).
    pub done: bool,
}

/// The decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size line so far.
    line: usize,
    /// Trailer bytes so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0, size: 0 },
            line: 0,
            trailers: 0,
        }
    }

    /// The message has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input` up to the first data run (returned as a range of `input`), the
    /// end of the message, or the end of `input`, whichever comes first. Bytes past the message's end
    /// are not consumed. After an error the decoder must not be used again.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkedError> {
        let mut at = 0;
        while at < input.len() {
            if let State::Data { remaining } = self.state {
                let take = remaining.min((input.len() - at) as u64) as usize;
                self.state = if take as u64 == remaining {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - take as u64,
                    }
                };
                return Ok(Step {
                    consumed: at + take,
                    data: Some(at..at + take),
                    done: false,
                });
            }
            if self.state == State::Done {
                break;
            }
            self.framing_byte(input[at])?;
            at += 1;
        }
        Ok(Step {
            consumed: at,
            data: None,
            done: self.state == State::Done,
        })
    }

    /// Consumes as much of `input` as belongs to the message, for forwarding it as it is: returns the
    /// bytes consumed and whether the message ended.
    pub fn skip(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkedError> {
        let mut at = 0;
        loop {
            let step = self.step(&input[at..])?;
            at += step.consumed;
            if step.done || at == input.len() || step.consumed == 0 {
                return Ok((at, step.done));
            }
        }
    }

    fn framing_byte(&mut self, b: u8) -> Result<(), ChunkedError> {
        use State::*;
        self.state = match self.state {
            Size { digits, size } => {
                self.count_line()?;
                match b {
                    _ if b.is_ascii_hexdigit() => {
                        if digits == MAX_SIZE_DIGITS {
                            return Err(ChunkedError::SizeTooLong);
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        Size {
                            digits: digits + 1,
                            size: size << 4 | digit,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkedError::BadSize),
                    b' ' | b'\t' => SizeSpace { size },
                    b';' => Extension {
                        size,
                        quoted: false,
                        escaped: false,
                    },
                    b'\r' => SizeLf { size },
                    _ => return Err(ChunkedError::BadSize),
                }
            }
            SizeSpace { size } => {
                self.count_line()?;
                match b {
                    b' ' | b'\t' => SizeSpace { size },
                    b';' => Extension {
                        size,
                        quoted: false,
                        escaped: false,
                    },
                    _ => return Err(ChunkedError::BadExtension),
                }
            }
            Extension {
                size,
                quoted,
                escaped,
            } => {
                self.count_line()?;
                if !(b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
                    // CR ends the line, but not inside a quoted string; anything else here is a CTL.
                    if b == b'\r' && !quoted {
                        self.state = SizeLf { size };
                        return Ok(());
                    }
                    return Err(ChunkedError::BadExtension);
                }
                match (quoted, escaped, b) {
                    (true, true, _) => Extension {
                        size,
                        quoted,
                        escaped: false,
                    },
                    (true, false, b'\\') => Extension {
                        size,
                        quoted,
                        escaped: true,
                    },
                    (_, _, b'"') => Extension {
                        size,
                        quoted: !quoted,
                        escaped: false,
                    },
                    _ => Extension {
                        size,
                        quoted,
                        escaped,
                    },
                }
            }
            SizeLf { size } => {
                if b != b'\n' {
                    return Err(ChunkedError::BadSize);
                }
                self.line = 0;
                if size == 0 {
                    TrailerStart
                } else {
                    Data { remaining: size }
                }
            }
            Data { .. } => unreachable!("data runs are consumed in step"),
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => Size { digits: 0, size: 0 },
            DataCr | DataLf => return Err(ChunkedError::MissingCrlf),
            TrailerStart => match b {
                b'\r' => FinalLf,
                _ if is_token(b) => {
                    self.count_trailer()?;
                    TrailerName
                }
                _ => return Err(ChunkedError::BadTrailer),
            },
            TrailerName => {
                self.count_trailer()?;
                match b {
                    b':' => TrailerValue,
                    _ if is_token(b) => TrailerName,
                    _ => return Err(ChunkedError::BadTrailer),
                }
            }
            TrailerValue => {
                self.count_trailer()?;
                match b {
                    b'\r' => TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => TrailerValue,
                    _ => return Err(ChunkedError::BadTrailer),
                }
            }
            TrailerLf if b == b'\n' => {
                self.count_trailer()?;
                TrailerStart
            }
            TrailerLf | FinalLf if b != b'\n' => return Err(ChunkedError::BadTrailer),
            FinalLf => Done,
            TrailerLf => unreachable!("LF handled above"),
            Done => Done,
        };
        Ok(())
    }

    fn count_line(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(ChunkedError::LineTooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILER_BYTES {
            return Err(ChunkedError::TrailersTooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
