//! Host addresses and DNS names: the values a cluster file uses to name machines and objects.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The address airlock connects to: an IP address or a DNS name, nothing else (no port, no
/// brackets, no user part).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostAddress(Kind);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Ip(IpAddr),
    /// A DNS name, stored lower-cased because DNS compares names without case.
    Name(String),
}

/// A string that is neither an IP address nor a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host address {value:?}: {reason}")]
pub struct InvalidHostAddress {
    pub value: String,
    pub reason: String,
}

impl HostAddress {
    /// Checks that `text` is an IP address or a DNS name.
    pub fn parse(text: &str) -> Result<HostAddress, InvalidHostAddress> {
        let invalid = |reason: &str| InvalidHostAddress {
            value: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("the address is empty"));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(HostAddress(Kind::Ip(ip)));
        }
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
            && inner.parse::<IpAddr>().is_ok()
        {
            return Err(invalid("write IPv6 addresses without brackets"));
        }
        if let Some((host, port)) = text.rsplit_once(':')
            && !host.contains(':')
            && port.parse::<u16>().is_ok()
        {
            return Err(invalid(
                "the port belongs in the port field, not in the address",
            ));
        }
        if text.contains('@') {
            return Err(invalid(
                "the user belongs in the user field, not in the address",
            ));
        }
        dns_name_error(text).map_or(Ok(()), |reason| Err(invalid(&reason)))?;
        Ok(HostAddress(Kind::Name(
            text.trim_end_matches('.').to_ascii_lowercase(),
        )))
    }

    /// Returns the IP address, when the host was given by address rather than by name.
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.0 {
            Kind::Ip(ip) => Some(*ip),
            Kind::Name(_) => None,
        }
    }

    /// Returns the DNS name, when the host was given by name.
    pub fn name(&self) -> Option<&str> {
        match &self.0 {
            Kind::Ip(_) => None,
            Kind::Name(name) => Some(name),
        }
    }
}

impl FromStr for HostAddress {
    type Err = InvalidHostAddress;

    fn from_str(text: &str) -> Result<HostAddress, InvalidHostAddress> {
        HostAddress::parse(text)
    }
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Ip(ip) => ip.fmt(f),
            Kind::Name(name) => f.write_str(name),
        }
    }
}

impl Serialize for HostAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Returns why `text` is not a DNS name (RFC 1123 host names: labels of letters, digits and hyphens,
/// at most 63 characters each and 253 in total, the last label not all digits), or `None`.
pub fn dns_name_error(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Some("the name is empty".to_string());
    }
    if name.len() > 253 {
        return Some("a DNS name has at most 253 characters".to_string());
    }
    for label in name.split('.') {
        if let Some(reason) = label_error(label, false) {
            return Some(reason);
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(
            "not a valid IP address, and a DNS name cannot end in a numeric label".to_string(),
        );
    }
    None
}

/// Returns why `text` is not a lower-case DNS label (RFC 1123, as Kubernetes requires for namespace
/// names), or `None`.
pub fn dns_label_error(text: &str) -> Option<String> {
    label_error(text, true)
}

fn label_error(label: &str, lower_case_only: bool) -> Option<String> {
    if label.is_empty() {
        return Some("a DNS label cannot be empty".to_string());
    }
    if label.len() > 63 {
        return Some(format!("the label {label:?} is longer than 63 characters"));
    }
    let allowed = |c: char| {
        c == '-'
            || c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || (!lower_case_only && c.is_ascii_uppercase())
    };
    if let Some(bad) = label.chars().find(|&c| !allowed(c)) {
        let what = if lower_case_only {
            "lower-case letters, digits and"
        } else {
            "letters, digits and"
        };
        return Some(format!("{bad:?} is not allowed: use {what} \"-\""));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("the label {label:?} starts or ends with \"-\""));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ip_addresses_and_names() {
        assert_eq!(
            HostAddress::parse("127.0.1.2").unwrap().ip(),
            Some("127.0.1.2".parse().unwrap())
        );
        assert_eq!(HostAddress::parse("::1").unwrap().to_string(), "::1");
        let name = HostAddress::parse("Node-1.Lab.example").unwrap();
        assert_eq!(name.name(), Some("node-1.lab.example"));
        assert_eq!(
            HostAddress::parse("controller").unwrap().to_string(),
            "controller"
        );
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        let reason = |text: &str| HostAddress::parse(text).unwrap_err().reason;
        assert_eq!(reason(""), "the address is empty");
        assert_eq!(reason("[::1]"), "write IPv6 addresses without brackets");
        assert_eq!(
            reason("10.0.0.1:22"),
            "the port belongs in the port field, not in the address"
        );
        assert_eq!(
            reason("root@10.0.0.1"),
            "the user belongs in the user field, not in the address"
        );
        assert!(reason("10.0.0.256").contains("numeric label"));
        assert!(reason("node_1").contains("'_' is not allowed"));
        assert!(reason("-node").contains("starts or ends"));
        assert!(reason("a..b").contains("cannot be empty"));
    }

    #[test]
    fn dns_labels_are_lower_case() {
        assert_eq!(dns_label_error("research"), None);
        assert!(dns_label_error("Research").is_some());
        assert!(dns_label_error("re.search").is_some());
        assert!(dns_label_error(&"a".repeat(64)).is_some());
    }
}
