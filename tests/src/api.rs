//! A client of the controlplane's HTTP API for tests: JSON in, `(status, JSON)` out.

use std::net::SocketAddr;
use std::time::Duration;

use crate::net::wait_until;
use crate::procs::Dataplane;

/// Talks to one controlplane's API, with or without a bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub address: SocketAddr,
    pub token: Option<String>,
}

impl ApiClient {
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// `(status, parsed body)`; panics if the body is not JSON (every API answer is).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        self.call_with(method, path, &[], body)
    }

    /// [`ApiClient::call`] with extra request headers (`Origin`, `Content-Type`, `Authorization`, …).
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        headers.extend_from_slice(extra);
        let (status, text) = crate::http::request(self.address, method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path} answered {status} with non-JSON {text:?}: {e}")
        });
        (status, json)
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call("GET", path, None)
    }

    /// Calls and expects 200; returns the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
        let (status, json) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }
}

/// The snapshot version an API answer reports (`version`, or docker-flow-proxy's `RingwayVersion`).
pub fn version_of(answer: &serde_json::Value) -> u64 {
    answer["version"]
        .as_u64()
        .or_else(|| answer["RingwayVersion"].as_u64())
        .unwrap_or_else(|| panic!("no version in {answer}"))
}

/// Waits until the dataplane applied `version` (or a later one).
pub fn wait_version(dataplane: &mut Dataplane, version: u64) {
    let ok = wait_until(Duration::from_secs(20), || {
        dataplane.applied_versions().iter().any(|v| *v >= version)
            || dataplane.proc.try_wait().is_some()
    });
    assert!(
        ok && dataplane.proc.try_wait().is_none(),
        "dataplane never applied version {version}:\n{}",
        dataplane.proc.log_text()
    );
}
