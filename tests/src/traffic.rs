//! Client traffic with verifiable content: every connection's bytes come from a seeded generator, so the
//! receiver can check each byte without keeping a copy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

/// xorshift64*: fast enough in debug builds, and deterministic per seed.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// Sends `len` pattern bytes for `seed`, then half-closes.
pub fn send_pattern(stream: &mut TcpStream, seed: u64, len: usize) -> std::io::Result<()> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        pattern.fill(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write)
}

/// Reads until EOF and checks the bytes are exactly `len` pattern bytes for `seed`.
pub fn expect_pattern(stream: &mut TcpStream, seed: u64, len: usize) -> Result<(), String> {
    let mut check = PatternCheck::new(seed, len);
    let mut got = vec![0u8; CHUNK];
    loop {
        let n = stream
            .read(&mut got)
            .map_err(|e| format!("read after {} bytes: {e}", check.received()))?;
        if n == 0 {
            return check.finish();
        }
        check.check(&got[..n])?;
    }
}

/// Checks received bytes against the pattern of a seed, in pieces of any length.
pub struct PatternCheck {
    pattern: PatternStream,
    expected: Vec<u8>,
    received: usize,
    len: usize,
}

impl PatternCheck {
    /// Expects exactly `len` pattern bytes for `seed`.
    pub fn new(seed: u64, len: usize) -> Self {
        Self {
            pattern: PatternStream::new(seed),
            expected: Vec::new(),
            received: 0,
            len,
        }
    }

    pub fn received(&self) -> usize {
        self.received
    }

    /// Checks the next piece received.
    pub fn check(&mut self, got: &[u8]) -> Result<(), String> {
        if self.received + got.len() > self.len {
            return Err(format!("more than the {} bytes sent", self.len));
        }
        self.expected.resize(got.len(), 0);
        self.pattern.fill(&mut self.expected);
        if got != self.expected.as_slice() {
            return Err(format!("corrupt bytes after offset {}", self.received));
        }
        self.received += got.len();
        Ok(())
    }

    /// At the end of the stream: everything arrived.
    pub fn finish(&self) -> Result<(), String> {
        if self.received == self.len {
            Ok(())
        } else {
            Err(format!(
                "clean end after {} of {} bytes",
                self.received, self.len
            ))
        }
    }
}

/// One echo round trip of `len` bytes: writes on a second thread while reading, so neither side stalls.
pub fn echo_round_trip(port: u16, seed: u64, len: usize) -> Result<(), String> {
    let mut stream = crate::net::connect(port).map_err(|e| format!("connect: {e}"))?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || send_pattern(&mut writer, seed, len));
    let result = expect_pattern(&mut stream, seed, len);
    let sent = sender.join().map_err(|_| "sender panicked".to_string())?;
    sent.map_err(|e| format!("write: {e}"))?;
    result
}

/// The byte stream of [`Pattern`] for a seed, in pieces of any length: `fill(a)` then `fill(b)` gives the
/// same bytes as one `fill` of `a.len() + b.len()` (and as [`send_pattern`] of that length).
pub struct PatternStream {
    pattern: Pattern,
    block: [u8; 8],
    /// Bytes of `block` already handed out.
    used: usize,
}

impl PatternStream {
    pub fn new(seed: u64) -> Self {
        Self {
            pattern: Pattern::new(seed),
            block: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, mut out: &mut [u8]) {
        while !out.is_empty() {
            if self.used == 8 {
                self.pattern.fill(&mut self.block);
                self.used = 0;
            }
            let n = (8 - self.used).min(out.len());
            out[..n].copy_from_slice(&self.block[self.used..self.used + n]);
            self.used += n;
            out = &mut out[n..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_stream_matches_the_pattern_in_any_pieces() {
        let mut whole = vec![0u8; 1000];
        Pattern::new(7).fill(&mut whole);
        let mut stream = PatternStream::new(7);
        let mut pieces = Vec::new();
        for len in [1, 7, 8, 13, 100, 871] {
            let mut piece = vec![0u8; len];
            stream.fill(&mut piece);
            pieces.extend(piece);
        }
        assert_eq!(pieces, whole);
    }
}
