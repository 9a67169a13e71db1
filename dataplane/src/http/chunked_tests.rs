use proptest::prelude::*;

use super::*;

/// Feeds `input` in pieces cut at `cuts`; returns the data ranges (absolute, adjacent ones merged), the
/// bytes consumed and whether the message ended.
fn decode_split(
    input: &[u8],
    cuts: &[usize],
) -> Result<(Vec<Range<usize>>, usize, bool), ChunkedError> {
    let mut decoder = ChunkedDecoder::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    let mut at = 0;
    let mut piece_start = 0;
    for end in bounds {
        let piece_end = end.max(piece_start);
        // Everything of the piece that the decoder does not consume stays for the next piece.
        while at < piece_end {
            let step = decoder.step(&input[at..piece_end])?;
            if let Some(data) = step.data {
                let data = at + data.start..at + data.end;
                match ranges.last_mut() {
                    Some(last) if last.end == data.start => last.end = data.end,
                    _ => ranges.push(data),
                }
            }
            at += step.consumed;
            if step.done {
                return Ok((ranges, at, true));
            }
            if step.consumed == 0 {
                break;
            }
        }
        piece_start = piece_end;
    }
    Ok((ranges, at, decoder.is_done()))
}

fn decode(input: &[u8]) -> Result<(Vec<Range<usize>>, usize, bool), ChunkedError> {
    decode_split(input, &[])
}

fn data_of(input: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    ranges
        .iter()
        .flat_map(|r| input[r.clone()].to_vec())
        .collect()
}

#[test]
fn decodes_chunks_and_stops_at_the_end() {
    let input = b"5\r\nhello\r\n6;name=\"v;x\"\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1";
    let (ranges, consumed, done) = decode(input).unwrap();
    assert!(done);
    assert_eq!(
        &input[consumed..],
        b"GET / HTTP/1.1",
        "pipelined bytes are left"
    );
    assert_eq!(data_of(input, &ranges), b"hello world");
    assert_eq!(ranges.len(), 2);
}

#[test]
fn upper_and_lower_case_hex_and_leading_zeros() {
    let input = b"000A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
    let (ranges, consumed, done) = decode(input).unwrap();
    assert!(done && consumed == input.len());
    assert_eq!(data_of(input, &ranges).len(), 20);
}

#[test]
fn skip_consumes_the_whole_message() {
    let input = b"3\r\nabc\r\n0\r\n\r\nrest";
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.skip(input).unwrap(), (input.len() - 4, true));
    let mut decoder = ChunkedDecoder::new();
    assert_eq!(decoder.skip(&input[..5]).unwrap(), (5, false));
    assert_eq!(decoder.skip(&input[5..]).unwrap(), (input.len() - 9, true));
}

#[test]
fn rejects_broken_framing() {
    let cases: &[(&[u8], ChunkedError)] = &[
        (b"\r\n", ChunkedError::BadSize),
        (b"g\r\n", ChunkedError::BadSize),
        (b"-1\r\n", ChunkedError::BadSize),
        (b"+5\r\nhello\r\n", ChunkedError::BadSize),
        (b"0x5\r\n", ChunkedError::BadSize),
        (b" 5\r\n", ChunkedError::BadSize),
        (b"5\nhello\r\n", ChunkedError::BadSize),
        (b"5\rxhello", ChunkedError::BadSize),
        (b"5 \r\nhello\r\n", ChunkedError::BadExtension),
        (b"5 x\r\n", ChunkedError::BadExtension),
        (b"5;a\nb\r\n", ChunkedError::BadExtension),
        (b"5;a=\"x\r\nhello\r\n", ChunkedError::BadExtension),
        (b"5;a\x00\r\n", ChunkedError::BadExtension),
        (b"11111111111111111\r\n", ChunkedError::SizeTooLong),
        (b"5\r\nhelloX\r\n", ChunkedError::MissingCrlf),
        (b"5\r\nhello\n0\r\n\r\n", ChunkedError::MissingCrlf),
        (b"5\r\nhello\r\r", ChunkedError::MissingCrlf),
        (b"0\r\n\n", ChunkedError::BadTrailer),
        (b"0\r\n\rX", ChunkedError::BadTrailer),
        (b"0\r\n: v\r\n\r\n", ChunkedError::BadTrailer),
        (b"0\r\nName : v\r\n\r\n", ChunkedError::BadTrailer),
        (b"0\r\n folded\r\n\r\n", ChunkedError::BadTrailer),
        (b"0\r\nName: a\x00b\r\n\r\n", ChunkedError::BadTrailer),
        (b"0\r\nName: a\nb\r\n\r\n", ChunkedError::BadTrailer),
        (b"0\r\nName: v\rX", ChunkedError::BadTrailer),
    ];
    for (input, error) in cases {
        assert_eq!(
            decode(input).map(|_| ()),
            Err(*error),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn sixteen_digits_are_allowed() {
    let mut decoder = ChunkedDecoder::new();
    let step = decoder.step(b"000000000000000F\r\nab").unwrap();
    assert_eq!(step.data, Some(18..20));
}

#[test]
fn bounds_the_size_line_and_the_trailers() {
    let mut line = b"5;".to_vec();
    line.resize(MAX_CHUNK_LINE + 10, b'a');
    assert_eq!(decode(&line).map(|_| ()), Err(ChunkedError::LineTooLong));

    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() < MAX_TRAILER_BYTES + 100 {
        trailers.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    trailers.extend_from_slice(b"\r\n");
    assert_eq!(
        decode(&trailers).map(|_| ()),
        Err(ChunkedError::TrailersTooLarge)
    );
}

#[test]
fn extension_quotes_and_escapes() {
    // An escaped quote does not close the string; a semicolon inside it is not a new extension.
    let input = b"1;a=\"x\\\";\r\n\"\r\nz\r\n0\r\n\r\n";
    assert_eq!(decode(input).map(|_| ()), Err(ChunkedError::BadExtension));
    let input = b"1;a=\"x\\\"\";b=c\r\nz\r\n0\r\n\r\n";
    let (ranges, _, done) = decode(input).unwrap();
    assert!(done);
    assert_eq!(data_of(input, &ranges), b"z");
}

/// A valid chunked encoding of `chunks`, with optional extensions and trailers.
fn encode(
    chunks: &[Vec<u8>],
    extensions: bool,
    trailers: &[(String, String)],
    upper: bool,
) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let size = if upper {
            format!("{:X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        out.extend_from_slice(size.as_bytes());
        if extensions && i % 2 == 0 {
            out.extend_from_slice(b" ;ext=\"q;\\\"v\";flag");
        }
        out.extend_from_slice(b"\r\n");
        ranges.push(out.len()..out.len() + chunk.len());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    (out, ranges)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any valid encoding, cut anywhere, decodes to the same chunk data ranges and ends exactly at the
    /// end of the message, leaving what follows.
    #[test]
    fn valid_encodings_decode_the_same_whatever_the_splits(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
        extensions in any::<bool>(),
        upper in any::<bool>(),
        trailers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..3),
        cuts in prop::collection::vec(0usize..3000, 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let trailers: Vec<(String, String)> =
            trailers.into_iter().map(|(n, v)| (n, v.trim().to_string())).collect();
        let (mut input, expected) = encode(&chunks, extensions, &trailers, upper);
        let message_len = input.len();
        input.extend_from_slice(&tail);

        let whole = decode(&input).unwrap();
        prop_assert_eq!(&whole.0, &expected);
        prop_assert_eq!(whole.1, message_len);
        prop_assert!(whole.2);

        let split = decode_split(&input, &cuts).unwrap();
        prop_assert_eq!(split, whole);
    }

    /// Arbitrary bytes never panic, and never claim more than they were given.
    #[test]
    fn random_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0usize..600, 0..8),
    ) {
        if let Ok((ranges, consumed, _)) = decode_split(&input, &cuts) {
            prop_assert!(consumed <= input.len());
            prop_assert!(ranges.iter().all(|r| r.end <= consumed));
        }
    }

    /// Mostly-valid framing with one byte changed either decodes or fails cleanly; data stays within
    /// the input.
    #[test]
    fn mutated_encodings_never_panic(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..50), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (mut input, _) = encode(&chunks, true, &[("X-T".into(), "v".into())], false);
        let i = at.index(input.len());
        input[i] = byte;
        if let Ok((ranges, consumed, _)) = decode(&input) {
            prop_assert!(ranges.iter().all(|r| r.end <= consumed && consumed <= input.len()));
        }
    }
}
