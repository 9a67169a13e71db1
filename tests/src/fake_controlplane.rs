//! A scripted controlplane speaking the real wire protocol (`ringway_shared::wire`), for sending what the
//! real controlplane never would (snapshots that break invariants) and for reading the dataplane's
//! replies one by one.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringway_shared::Snapshot;
use ringway_shared::wire::{self, FrameDecoder, Hello, Message, Role};

/// How long [`Session::reply`] waits for an answer other than ping/pong.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct FakeControlplane {
    listener: UnixListener,
    pub path: PathBuf,
}

/// One accepted dataplane session, after the hello exchange.
pub struct Session {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// The dataplane's hello.
    pub hello: Hello,
}

impl FakeControlplane {
    pub fn bind(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        Self {
            listener: UnixListener::bind(path).unwrap(),
            path: path.to_path_buf(),
        }
    }

    /// Accepts the next dataplane and exchanges hellos.
    pub fn accept(&self) -> Session {
        let (mut stream, _) = self.listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut decoder = FrameDecoder::new();
        let Some(Message::Hello(hello)) = wire::read_message(&mut stream, &mut decoder).unwrap()
        else {
            panic!("the dataplane did not start with hello");
        };
        wire::write_message(
            &mut stream,
            &Message::Hello(Hello::new(Role::Controlplane, "fake", 0, 0)),
        )
        .unwrap();
        Session {
            stream,
            decoder,
            hello,
        }
    }
}

impl Session {
    pub fn send(&mut self, snapshot: &Snapshot) {
        wire::write_message(
            &mut self.stream,
            &Message::Snapshot(Box::new(snapshot.clone())),
        )
        .unwrap();
    }

    /// The next message other than ping/pong; panics if none comes within [`REPLY_TIMEOUT`] (the
    /// dataplane's pings would otherwise keep a missing reply waiting forever).
    pub fn reply(&mut self) -> Message {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no reply from the dataplane within {REPLY_TIMEOUT:?}"
            );
            let message = wire::read_message(&mut self.stream, &mut self.decoder)
                .unwrap()
                .expect("dataplane closed the session");
            match message {
                Message::Ping { nonce } => {
                    wire::write_message(&mut self.stream, &Message::Pong { nonce }).unwrap()
                }
                Message::Pong { .. } => {}
                other => return other,
            }
        }
    }
}
