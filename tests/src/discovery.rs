//! What the discovery end-to-end tests share: a controlplane on discovery flags with a dataplane behind it,
//! and ways to see where a listener routes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::backends::read_name;
use crate::net::{connect, wait_until};
use crate::procs::{Controlplane, Dataplane};

/// Longest any discovery change may take to reach the dataplane before a test fails. Generous: the machine
/// is shared; no test asserts how long anything took.
pub const CHANGE_LIMIT: Duration = Duration::from_secs(20);
/// How long a probe waits for a backend's name; a listener with no backend holds the connection in its
/// queue, so this bounds each probe.
const PROBE_READ: Duration = Duration::from_millis(800);
/// What a probe reports when no backend answered.
pub const NO_ROUTE: &str = "!";

/// A controlplane started with `args` and a dataplane following it, in `dir`.
pub struct Stack {
    pub controlplane: Controlplane,
    pub dataplane: Dataplane,
}

impl Stack {
    /// Starts both; does not wait for a snapshot (a source may be down on purpose). `args` get
    /// `--listen-address 127.0.0.1` so discovered services stay on loopback.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let mut all = vec!["--listen-address", "127.0.0.1"];
        all.extend(args);
        let controlplane = Controlplane::start_with(dir, &all);
        let dataplane = Dataplane::start(dir, &controlplane.socket, &[]);
        Self {
            controlplane,
            dataplane,
        }
    }

    /// Text of the controlplane's log.
    pub fn log(&self) -> String {
        self.controlplane.proc.log_text()
    }

    /// Waits until the controlplane's log contains `text`.
    pub fn wait_log(&self, text: &str) -> bool {
        wait_until(CHANGE_LIMIT, || self.log().contains(text))
    }
}

/// The backend names answering `count` connections to `port`, opened together and held until all have
/// answered, so least-connections balancing spreads them over every backend. A connection that is refused
/// or gets no name counts as [`NO_ROUTE`].
pub fn names_on(port: u16, count: usize) -> BTreeSet<String> {
    let mut open = Vec::new();
    let mut names = BTreeSet::new();
    for _ in 0..count {
        match connect(port) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(PROBE_READ));
                match read_name(&mut stream) {
                    Ok(name) => {
                        names.insert(name);
                        open.push(stream);
                    }
                    Err(_) => {
                        names.insert(NO_ROUTE.to_string());
                    }
                }
            }
            Err(_) => {
                names.insert(NO_ROUTE.to_string());
            }
        }
    }
    names
}

/// Waits until `port` routes to exactly `expected` (names of backends, or [`NO_ROUTE`]); returns the last
/// set seen when it never does.
pub fn wait_for_names(port: u16, expected: &[&str]) -> Result<(), BTreeSet<String>> {
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let probes = 2 * expected.len() + 1;
    let mut last = BTreeSet::new();
    if wait_until(CHANGE_LIMIT, || {
        last = names_on(port, probes);
        last == want
    }) {
        Ok(())
    } else {
        Err(last)
    }
}

/// Asserts `port` comes to route to exactly `expected`, with the controlplane's log on failure.
#[track_caller]
pub fn assert_routes(stack: &Stack, port: u16, expected: &[&str]) {
    if let Err(seen) = wait_for_names(port, expected) {
        panic!(
            "port {port} should route to {expected:?}, saw {seen:?}\n--- controlplane log ---\n{}",
            stack.log()
        );
    }
}
