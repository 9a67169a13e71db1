//! AFL target: `ringway_fuzz::http::fuzzing::response_head`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ringway_fuzz::http::fuzzing::response_head(data);
    });
}
