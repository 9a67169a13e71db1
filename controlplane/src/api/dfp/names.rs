//! What a docker-flow-proxy registration may call its service and its domains.
//!
//! A registration's name ends up in logs, in `/v1/services`, in the state file and in the dataplane's
//! statistics and metrics labels; its domains become virtual hosts. Neither is ever trusted as it comes:
//! a name is what Docker itself allows for a service (letters, digits, `.`, `_`, `-`, starting with a
//! letter or digit, at most 63 characters), a domain is a DNS host name, optionally a `*.` wildcard.

/// Longest service name: Docker's limit for service names, and a DNS label's.
pub const MAX_SERVICE_NAME: usize = 63;
/// Longest domain name (RFC 1035, without the trailing dot).
pub const MAX_DOMAIN: usize = 253;
/// Longest label of a domain name.
pub const MAX_LABEL: usize = 63;

/// Why `name` cannot be a service name, if it cannot.
pub fn check_service_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SERVICE_NAME {
        return Err(format!(
            "serviceName: {} characters; at most {MAX_SERVICE_NAME}",
            name.len()
        ));
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => {
            return Err(format!(
                "serviceName: {name:?} must start with a letter or digit"
            ));
        }
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(bad) => Err(format!(
            "serviceName: {name:?} contains {bad:?}; use letters, digits, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

/// Why `domain` (already lowercased) cannot be a virtual host, if it cannot.
pub fn check_domain(field: &str, domain: &str) -> Result<(), String> {
    let host = domain.strip_prefix("*.").unwrap_or(domain);
    let bad = |why: &str| Err(format!("{field}: {domain:?} {why}"));
    if host.is_empty() {
        return bad("is not a domain name");
    }
    if domain.len() > MAX_DOMAIN {
        return bad(&format!("is longer than {MAX_DOMAIN} characters"));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return bad("has an empty label");
        }
        if label.len() > MAX_LABEL {
            return bad(&format!("has a label longer than {MAX_LABEL} characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label that starts or ends with '-'");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return bad(&format!(
                "contains {c:?}; a domain is letters, digits, '-' and '.', optionally starting with '*.'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_what_docker_allows() {
        for good in ["redis", "app.v2_x-1", "A1", &"n".repeat(63)] {
            assert_eq!(check_service_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a b",
            "a\nb",
            "ü",
            "x;rm",
            &"n".repeat(64),
        ] {
            let err = check_service_name(bad).unwrap_err();
            assert!(err.starts_with("serviceName: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn domains_are_host_names_or_wildcards() {
        for good in ["example.com", "*.example.com", "a-b.c0.example", "intranet"] {
            assert_eq!(check_domain("serviceDomain", good), Ok(()), "{good}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long = ["a"; 130].join(".");
        for bad in [
            "",
            "*.",
            "*",
            "bad..example",
            ".example.com",
            "example.com.",
            "-a.com",
            "a-.com",
            "a_b.com",
            "example.com:8080",
            "a.*.com",
            "exa mple.com",
            &long_label,
            &long,
        ] {
            let err = check_domain("serviceDomain.2", bad).unwrap_err();
            assert!(err.starts_with("serviceDomain.2: "), "{bad:?}: {err}");
        }
    }
}
