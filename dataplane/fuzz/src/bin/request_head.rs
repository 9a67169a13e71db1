//! AFL target: `ringway_fuzz::http::fuzzing::request_head`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ringway_fuzz::http::fuzzing::request_head(data);
    });
}
