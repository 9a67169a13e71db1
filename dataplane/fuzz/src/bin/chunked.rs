//! AFL target: `ringway_fuzz::http::fuzzing::chunked`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ringway_fuzz::http::fuzzing::chunked(data);
    });
}
