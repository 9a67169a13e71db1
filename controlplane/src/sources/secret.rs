//! The secrets sources send (Marathon's credentials, Consul's ACL token): read from the command line, the
//! environment, a file, or a URL's `user:password@`, sent as headers, and never shown. Their `Debug` is
//! redacted, URLs lose their credentials before anything logs or stores them, and error messages name the
//! flag or the file, never the value.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::HeaderValue;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("{what} must look like user:password")]
    NotUserPassword { what: String },
    #[error("{what} holds a character an HTTP header cannot carry")]
    NotAHeader { what: String },
    #[error("{url:?} is not a URL: {detail}")]
    Url { url: String, detail: String },
}

/// A value that must not be shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// `what` names the value in errors (a flag, a file).
    pub fn new(value: impl Into<String>, what: &str) -> Result<Self, SecretError> {
        let value = value.into();
        if value.is_empty() {
            return Err(SecretError::Empty { what: what.into() });
        }
        if HeaderValue::from_str(&value).is_err() {
            return Err(SecretError::NotAHeader { what: what.into() });
        }
        Ok(Self(value))
    }

    /// The file's content, without the trailing newline an editor or `echo` leaves.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(
            text.trim_end_matches(['\n', '\r']),
            &path.display().to_string(),
        )
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as a header marked sensitive (kept out of HTTP/2 tables and `Debug` output).
    pub fn header(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&self.0).expect("checked when made");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// HTTP Basic credentials (Marathon's `--http_credentials`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: Secret,
}

impl Credentials {
    /// `user:password` (the password may hold `:`); `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, SecretError> {
        let (user, password) = text
            .split_once(':')
            .filter(|(user, _)| !user.is_empty())
            .ok_or_else(|| SecretError::NotUserPassword { what: what.into() })?;
        Ok(Self {
            user: user.to_string(),
            password: Secret::new(password, what)?,
        })
    }

    /// `user:password` from a file (its trailing newline dropped).
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let secret = Secret::from_file(path)?;
        Self::parse(secret.expose(), &path.display().to_string())
    }

    /// `Basic base64(user:password)`, marked sensitive.
    pub fn header(&self) -> HeaderValue {
        let encoded = BASE64.encode(format!("{}:{}", self.user, self.password.expose()));
        let mut value =
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("base64 is ASCII");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}

/// Takes `user:password@` out of a URL: what is left is safe to log and show, the credentials are
/// returned apart (percent-decoded, as a browser would send them).
pub fn split_credentials(url: &str) -> Result<(String, Option<Credentials>), SecretError> {
    let mut parsed = reqwest::Url::parse(url.trim()).map_err(|e| SecretError::Url {
        url: without_userinfo(url),
        detail: e.to_string(),
    })?;
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, password) => {
            let text = format!(
                "{}:{}",
                percent_decode(user),
                percent_decode(password.unwrap_or_default())
            );
            Some(Credentials::parse(
                &text,
                &format!("the credentials in {}", without_userinfo(url)),
            )?)
        }
    };
    // Cannot fail for the URLs with an authority that carry credentials at all.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((
        parsed.as_str().trim_end_matches('/').to_string(),
        credentials,
    ))
}

/// `url` with anything between `//` and the last `@` of its authority removed, for error messages about
/// URLs that do not even parse.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("//") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}//{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let (url, credentials) =
            split_credentials("https://ringway:s3cr%40t:x@marathon1:8443/").unwrap();
        assert_eq!(url, "https://marathon1:8443");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.user, "ringway");
        assert_eq!(credentials.password.expose(), "s3cr@t:x");
        assert!(!format!("{credentials:?}").contains("s3cr"));
        let header = credentials.header();
        assert!(header.is_sensitive());
        assert_eq!(
            header.to_str().unwrap(),
            format!("Basic {}", BASE64.encode("ringway:s3cr@t:x"))
        );
        assert_eq!(
            split_credentials("http://m2:8080").unwrap(),
            ("http://m2:8080".to_string(), None)
        );
        let err = split_credentials("http://u:p4ss@").unwrap_err().to_string();
        assert!(!err.contains("p4ss"), "{err}");
        assert_eq!(without_userinfo("http://u:p@h:1/x@y"), "http://h:1/x@y");
    }

    #[test]
    fn secrets_are_read_from_text_and_files_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        std::fs::write(&file, "ringway:pa:ss\n").unwrap();
        let credentials = Credentials::from_file(&file).unwrap();
        assert_eq!(credentials.password.expose(), "pa:ss");
        std::fs::write(&file, "token-123\r\n").unwrap();
        let token = Secret::from_file(&file).unwrap();
        assert_eq!(token.expose(), "token-123");
        assert_eq!(format!("{token:?}"), "<redacted>");
        for bad in ["nopassword", ":pw", ""] {
            let err = Credentials::parse(bad, "--marathon-auth").unwrap_err();
            assert!(err.to_string().starts_with("--marathon-auth"), "{err}");
        }
        std::fs::write(&file, "\n").unwrap();
        assert!(Secret::from_file(&file).is_err(), "empty");
        assert!(Secret::new("a\nb", "--consul-token").is_err());
        assert!(Secret::from_file(&dir.path().join("missing")).is_err());
    }
}
