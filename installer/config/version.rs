//! k0s versions: `v1.35.3+k0s.0`, a Kubernetes version plus a k0s build suffix.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A k0s release version. The `v` prefix is optional when parsing and always printed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct K0sVersion(semver::Version);

/// A string that is not a k0s version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid k0s version {value:?}: expected a version such as v1.35.3+k0s.0")]
pub struct InvalidK0sVersion {
    pub value: String,
}

impl K0sVersion {
    pub fn parse(text: &str) -> Result<K0sVersion, InvalidK0sVersion> {
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        semver::Version::parse(bare)
            .map(K0sVersion)
            .map_err(|_| InvalidK0sVersion {
                value: text.to_string(),
            })
    }
}

impl Ord for K0sVersion {
    /// Orders by semantic-version precedence, then by the `+k0s.N` build suffix, which k0s
    /// increments for rebuilds of the same Kubernetes version.
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .cmp_precedence(&other.0)
            .then_with(|| self.0.build.cmp(&other.0.build))
    }
}

impl PartialOrd for K0sVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for K0sVersion {
    type Err = InvalidK0sVersion;

    fn from_str(text: &str) -> Result<K0sVersion, InvalidK0sVersion> {
        K0sVersion::parse(text)
    }
}

impl fmt::Display for K0sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl Serialize for K0sVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> K0sVersion {
        K0sVersion::parse(text).unwrap()
    }

    #[test]
    fn parses_with_and_without_prefix() {
        assert_eq!(v("1.35.3+k0s.0").to_string(), "v1.35.3+k0s.0");
        assert_eq!(v("v1.35.3+k0s.0"), v("1.35.3+k0s.0"));
        assert_eq!(v("0.11.0-rc1").to_string(), "v0.11.0-rc1");
        assert!(K0sVersion::parse("latest").is_err());
        assert!(K0sVersion::parse("1.35").is_err());
    }

    #[test]
    fn orders_releases_candidates_and_rebuilds() {
        assert!(v("v1.32.1-rc.0+k0s.0") < v("v1.32.1+k0s.0"));
        assert!(v("v1.31.9+k0s.0") < v("v1.32.1-rc.0"));
        assert!(v("v1.35.3+k0s.0") < v("v1.35.3+k0s.1"));
        assert!(v("v1.35.3+k0s.1") < v("v1.35.4+k0s.0"));
    }
}
