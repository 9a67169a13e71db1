//! Real WebSocket peers from Debian's `python3-websockets` (which `tools/test` installs): an echo server
//! as a backend and a client, both run by `tests/python/websocket_peer.py` under Debian's own
//! `/usr/bin/python3` (a `python3` earlier on `PATH`, a pyenv one say, would not see the Debian module).
//!
//! The server picks its own loopback port and writes it to a file, so no port is raced for. The
//! client is driven line by line over its stdin and answers each command with one JSON line; message
//! contents go through files so every byte is compared here, in Rust. Both processes are killed when
//! their handles drop.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use crate::net::wait_until;
use crate::procs::Proc;

/// Debian's interpreter, the one that sees `python3-websockets`.
const PYTHON: &str = "/usr/bin/python3";
/// How long a peer may take to listen, or to answer one command (the script's own limit is 30 s).
const STEP_LIMIT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/websocket_peer.py")
}

fn check_python() {
    let found = Command::new(PYTHON)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{PYTHON} cannot import websockets: tools/test installs Debian's python3-websockets"
    );
}

/// A WebSocket message as either side sent or received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Vec<u8>),
}

/// The python echo server: every message comes back as it was sent; `/refuse…` is answered
/// `426 Upgrade Required` (with `Upgrade: websocket`) instead of a handshake.
pub struct WsEchoServer {
    pub port: u16,
    process: Proc,
}

impl WsEchoServer {
    /// Starts the server (files under `dir`) and waits until it listens.
    pub fn start(dir: &Path) -> Self {
        check_python();
        let port_file = dir.join("ws-server.port");
        let args = [
            script().display().to_string(),
            "server".into(),
            port_file.display().to_string(),
        ];
        let process = Proc::spawn_path(Path::new(PYTHON), &args, dir.join("ws-server.log"), &[]);
        assert!(
            wait_until(STEP_LIMIT, || port_file.exists()),
            "the websocket server did not listen: {}",
            process.log_text()
        );
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self { port, process }
    }

    /// The connections the server saw end, in order: `{"path", "host", "code", "reason"}` each.
    pub fn closed(&self) -> Vec<serde_json::Value> {
        self.process
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "closed")
            .collect()
    }
}

/// How an opening handshake ended.
pub enum Opened {
    Open(WsClient),
    /// The server answered with another status than 101; `upgrade` is its `Upgrade` field.
    Refused {
        status: u16,
        upgrade: Option<String>,
    },
}

/// The python client with one open WebSocket.
pub struct WsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dir: PathBuf,
    sent: usize,
}

impl WsClient {
    /// Connects to `proxy` and opens `ws://{host}{path}` (so `host` is the `Host` header).
    pub fn open(proxy: SocketAddr, host: &str, path: &str, dir: &Path) -> Opened {
        check_python();
        let mut child = Command::new(PYTHON)
            .arg(script())
            .args(["client", &proxy.to_string(), &format!("ws://{host}{path}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut client = Self {
            child,
            stdin,
            lines,
            dir: dir.to_path_buf(),
            sent: 0,
        };
        let opened = client.event();
        match opened["event"].as_str() {
            Some("open") => Opened::Open(client),
            Some("refused") => Opened::Refused {
                status: opened["status"].as_u64().unwrap() as u16,
                upgrade: opened["upgrade"].as_str().map(String::from),
            },
            _ => panic!("the websocket client failed to open: {opened}"),
        }
    }

    /// The next JSON line the client prints, within the step limit.
    fn event(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(STEP_LIMIT)
            .unwrap_or_else(|e| panic!("the websocket client said nothing ({e})"));
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the websocket client printed {line:?}: {e}"));
        assert_ne!(event["event"], "error", "the websocket client failed");
        event
    }

    fn command(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        self.event()
    }

    /// Sends `message` and returns the next message received, as it arrived.
    pub fn round_trip(&mut self, message: &WsMessage) -> WsMessage {
        self.sent += 1;
        let path = self.dir.join(format!("ws-message-{}", self.sent));
        let (bytes, kind) = match message {
            WsMessage::Text(text) => (text.as_bytes(), "text"),
            WsMessage::Binary(bytes) => (&bytes[..], "binary"),
        };
        std::fs::write(&path, bytes).unwrap();
        let echoed = self.command(&format!("echo {} {kind}", path.display()));
        let received = std::fs::read(path.with_extension("echo")).unwrap();
        match echoed["type"].as_str() {
            Some("text") => WsMessage::Text(String::from_utf8(received).unwrap()),
            Some("binary") => WsMessage::Binary(received),
            _ => panic!("the websocket client answered {echoed}"),
        }
    }

    /// The closing handshake with code 1000: the code and reason of the close frame that came back.
    pub fn close(mut self) -> (Option<u64>, String) {
        let closed = self.command("close");
        assert!(
            self.child.wait().is_ok_and(|s| s.success()),
            "the websocket client failed after closing"
        );
        (
            closed["code"].as_u64(),
            closed["reason"].as_str().unwrap_or_default().to_string(),
        )
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
