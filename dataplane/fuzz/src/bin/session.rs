//! AFL target: `ringway_fuzz::http::fuzzing::session`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        ringway_fuzz::http::fuzzing::session(data);
    });
}
