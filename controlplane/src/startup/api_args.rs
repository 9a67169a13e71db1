//! The API's safety flags (flattened into the controlplane's command line): where the token comes from,
//! which browser origins may call, and what docker-flow-proxy registrations may ask for. Their meaning is
//! in `docs/api.md` ("Security") and in [`crate::api::guard`] and [`crate::api::policy`].

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;

use crate::api::guard::normalize_origin;
use crate::api::policy::{Cidr, DEFAULT_MAX_REGISTRATIONS, RegistrationPolicy};

/// The dataplane's default `--status-endpoint` (`STATUS_ENDPOINT`), proxymatic's.
pub const DEFAULT_STATUS_ENDPOINT: &str = "0.0.0.0:9090";
/// Default of `--api-port-range`.
const DEFAULT_PORT_RANGE: &str = "1024-65535";

/// Flags of the API's safety.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ApiArgs {
    /// File whose first line is the API token (instead of --api-token, so the token is not in `ps` or
    /// the process environment). Read at start-up.
    #[arg(
        long,
        env = "RINGWAY_API_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<PathBuf>,

    /// Browser origins allowed to call the API besides its own (comma-separated scheme://host[:port], a
    /// web console's, say); their hosts may also be used as Host without a token.
    #[arg(
        long,
        env = "RINGWAY_API_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub api_allowed_origins: Vec<String>,

    /// Listen ports docker-flow-proxy registrations may take (srcPort), as LOW-HIGH.
    #[arg(long, env = "RINGWAY_API_PORT_RANGE", value_name = "LOW-HIGH",
          default_value = DEFAULT_PORT_RANGE)]
    pub api_port_range: String,

    /// Ports registrations may never take (comma-separated), besides the API's own and the dataplane's
    /// status endpoint's.
    #[arg(
        long,
        env = "RINGWAY_API_RESERVED_PORTS",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub api_reserved_ports: Vec<u16>,

    /// The dataplane's status endpoint, read from the variable the dataplane reads, only so that
    /// registrations cannot take its port. Empty: none.
    #[arg(long, env = "STATUS_ENDPOINT", value_name = "ADDR",
          default_value = DEFAULT_STATUS_ENDPOINT)]
    pub dataplane_status_endpoint: String,

    /// Backend addresses registrations may use although they are loopback, link-local, metadata,
    /// unspecified, broadcast or multicast (comma-separated CIDR ranges or addresses).
    #[arg(
        long,
        env = "RINGWAY_API_ALLOW_BACKENDS",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub api_allow_backends: Vec<String>,

    /// Let a registration take a listen address another source serves, adding its backends to that
    /// service.
    #[arg(long, env = "RINGWAY_API_ALLOW_MERGE", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::SetTrue)]
    pub api_allow_merge: bool,

    /// Most service names registered through docker-flow-proxy's calls.
    #[arg(long, env = "RINGWAY_API_MAX_REGISTRATIONS", value_name = "N",
          default_value_t = DEFAULT_MAX_REGISTRATIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_max_registrations: u32,
}

/// A safety flag that cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum ApiArgsError {
    #[error("--api-token-file {path}: {source}")]
    TokenFile { path: PathBuf, source: io::Error },
    #[error("--api-token-file {0}: the first line is empty")]
    EmptyToken(PathBuf),
    #[error("--api-allowed-origins: {0}")]
    Origin(String),
    #[error("--api-port-range: {0:?} is not a range like 1024-65535 (LOW <= HIGH, both 1..=65535)")]
    PortRange(String),
    #[error("--api-allow-backends: {0}")]
    Backends(String),
    #[error(
        "STATUS_ENDPOINT (--dataplane-status-endpoint): {0:?} is not an address like 0.0.0.0:9090"
    )]
    StatusEndpoint(String),
}

impl ApiArgs {
    /// The token from `--api-token-file`, if given.
    pub fn token_from_file(&self) -> Result<Option<String>, ApiArgsError> {
        self.api_token_file.as_deref().map(read_token).transpose()
    }

    /// `--api-allowed-origins`, as browsers send origins.
    pub fn allowed_origins(&self) -> Result<Vec<String>, ApiArgsError> {
        self.api_allowed_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| normalize_origin(o).map_err(ApiArgsError::Origin))
            .collect()
    }

    /// What registrations may ask for (the API's own port is added when it binds).
    pub fn policy(&self) -> Result<RegistrationPolicy, ApiArgsError> {
        let mut reserved: BTreeSet<u16> = self.api_reserved_ports.iter().copied().collect();
        match self.dataplane_status_endpoint.trim() {
            "" => {}
            text => {
                let status: SocketAddr = text
                    .parse()
                    .map_err(|_| ApiArgsError::StatusEndpoint(text.to_string()))?;
                reserved.insert(status.port());
            }
        }
        Ok(RegistrationPolicy {
            ports: parse_port_range(&self.api_port_range)?,
            reserved,
            allow_backends: self
                .api_allow_backends
                .iter()
                .filter(|c| !c.trim().is_empty())
                .map(|c| c.parse::<Cidr>().map_err(ApiArgsError::Backends))
                .collect::<Result<_, _>>()?,
            allow_merge: self.api_allow_merge,
            max_registrations: self.api_max_registrations as usize,
        })
    }
}

fn read_token(path: &Path) -> Result<String, ApiArgsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiArgsError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(ApiArgsError::EmptyToken(path.to_path_buf()));
    }
    Ok(token.to_string())
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, ApiArgsError> {
    let bad = || ApiArgsError::PortRange(text.to_string());
    let (low, high) = text.trim().split_once('-').ok_or_else(bad)?;
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
    match (port(low), port(high)) {
        (Some(low), Some(high)) if low <= high => Ok(low..=high),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_strictly() {
        assert_eq!(parse_port_range("1024-65535").unwrap(), 1024..=65535);
        assert_eq!(parse_port_range(" 80 - 80 ").unwrap(), 80..=80);
        for bad in ["", "80", "0-10", "10-5", "1-70000", "a-b"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret \nsecond line\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_token(&path),
            Err(ApiArgsError::EmptyToken(_))
        ));
        let err = read_token(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().starts_with("--api-token-file "), "{err}");
    }
}
