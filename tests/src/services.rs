//! Writes controlplane services files for tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `[[service]]` entry.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub listen: u16,
    pub balance: &'static str,
    pub maxconn: Option<u32>,
    pub backends: Vec<(u16, Option<u16>)>,
    pub extra: String,
}

impl Service {
    pub fn new(name: &str, listen: u16) -> Self {
        Self {
            name: name.into(),
            listen,
            balance: "round-robin",
            maxconn: None,
            backends: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn backend(mut self, port: u16) -> Self {
        self.backends.push((port, None));
        self
    }

    pub fn weighted(mut self, port: u16, weight: u16) -> Self {
        self.backends.push((port, Some(weight)));
        self
    }

    pub fn balance(mut self, balance: &'static str) -> Self {
        self.balance = balance;
        self
    }

    pub fn maxconn(mut self, maxconn: u32) -> Self {
        self.maxconn = Some(maxconn);
        self
    }

    /// Raw TOML lines added to the entry.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "[[service]]");
        let _ = writeln!(out, "name = \"{}\"", self.name);
        let _ = writeln!(out, "listen = \"127.0.0.1:{}\"", self.listen);
        let _ = writeln!(out, "balance = \"{}\"", self.balance);
        if let Some(m) = self.maxconn {
            let _ = writeln!(out, "maxconn = {m}");
        }
        out.push_str(&self.extra);
        let backends: Vec<String> = self
            .backends
            .iter()
            .map(|(port, weight)| match weight {
                Some(w) => format!("{{ address = \"127.0.0.1:{port}\", weight = {w} }}"),
                None => format!("{{ address = \"127.0.0.1:{port}\" }}"),
            })
            .collect();
        let _ = writeln!(out, "backends = [ {} ]\n", backends.join(", "));
    }
}

/// A services file in a test's temporary directory.
pub struct ServicesFile {
    pub path: PathBuf,
}

impl ServicesFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("services.toml"),
        }
    }

    /// Replaces the file atomically (write and rename), as configuration tools do.
    pub fn write(&self, services: &[Service]) {
        let mut text = String::new();
        for s in services {
            s.render(&mut text);
        }
        self.write_raw(&text);
    }

    pub fn write_raw(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}
