//! k0s version strings such as `v1.35.3+k0s.0`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A k0s release version: the Kubernetes version it ships plus k0s's own build number.
///
/// Ordering follows k0s's release order: `v1.35.3+k0s.0` < `v1.35.3+k0s.1` < `v1.36.0-rc.1+k0s.0`
/// < `v1.36.0+k0s.0`. A pre-release sorts before its release, as in semantic versioning.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct K0sVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The pre-release part without the dash, e.g. `rc.1`; empty for a release.
    pub pre: String,
    /// The number after `+k0s.`; 0 when the suffix is missing.
    pub build: u64,
}

/// A string that is not a k0s version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid k0s version {0:?}: expected a form like v1.35.3+k0s.0")]
pub struct ParseVersionError(String);

impl K0sVersion {
    /// Returns whether going from `self` to `target` skips a Kubernetes minor version, which
    /// Kubernetes does not support (v1.34 to v1.36 skips v1.35).
    pub fn skips_minor_to(&self, target: &K0sVersion) -> bool {
        target.major != self.major || target.minor > self.minor + 1
    }

    /// The Kubernetes version it ships, `v1.35.3`.
    pub fn kubernetes(&self) -> String {
        format!("v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for K0sVersion {
    type Err = ParseVersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseVersionError(text.to_string());
        let trimmed = text.trim();
        let body = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let (core_and_pre, build) = match body.split_once('+') {
            Some((core, suffix)) => {
                let number = suffix.strip_prefix("k0s.").ok_or_else(invalid)?;
                (core, number.parse().map_err(|_| invalid())?)
            }
            None => (body, 0),
        };
        let (core, pre) = match core_and_pre.split_once('-') {
            Some((core, pre)) if !pre.is_empty() => (core, pre.to_string()),
            Some(_) => return Err(invalid()),
            None => (core_and_pre, String::new()),
        };
        let numbers: Vec<u64> = core
            .split('.')
            .map(|part| part.parse().map_err(|_| invalid()))
            .collect::<Result<_, _>>()?;
        let [major, minor, patch] = numbers[..] else {
            return Err(invalid());
        };
        Ok(K0sVersion {
            major,
            minor,
            patch,
            pre,
            build,
        })
    }
}

impl fmt::Display for K0sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        write!(f, "+k0s.{}", self.build)
    }
}

impl Ord for K0sVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => compare_pre_release(&self.pre, &other.pre),
            })
            .then(self.build.cmp(&other.build))
    }
}

impl PartialOrd for K0sVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares dot-separated pre-release identifiers: numbers numerically, words by text.
fn compare_pre_release(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

impl serde::Serialize for K0sVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for K0sVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> K0sVersion {
        text.parse().unwrap()
    }

    #[test]
    fn versions_parse_and_print() {
        assert_eq!(v("v1.35.3+k0s.0").to_string(), "v1.35.3+k0s.0");
        assert_eq!(v("1.35.3").to_string(), "v1.35.3+k0s.0");
        assert_eq!(v("v1.36.0-rc.1+k0s.2").to_string(), "v1.36.0-rc.1+k0s.2");
        assert_eq!(v(" v1.33.2+k0s.0\n").kubernetes(), "v1.33.2");
    }

    #[test]
    fn malformed_versions_are_rejected() {
        for bad in [
            "",
            "v1.35",
            "v1.35.3+k8s.0",
            "v1.35.x",
            "v1.35.3-+k0s.0",
            "latest",
        ] {
            assert!(bad.parse::<K0sVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_order_like_releases() {
        let ordered = [
            "v1.35.3+k0s.0",
            "v1.35.3+k0s.1",
            "v1.36.0-alpha.1+k0s.0",
            "v1.36.0-rc.1+k0s.0",
            "v1.36.0-rc.2+k0s.0",
            "v1.36.0+k0s.0",
            "v1.36.10+k0s.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn minor_skips_are_detected() {
        assert!(!v("v1.35.3+k0s.0").skips_minor_to(&v("v1.36.3+k0s.0")));
        assert!(!v("v1.35.3+k0s.0").skips_minor_to(&v("v1.35.9+k0s.0")));
        assert!(v("v1.35.3+k0s.0").skips_minor_to(&v("v1.37.0+k0s.0")));
        assert!(v("v1.35.3+k0s.0").skips_minor_to(&v("v2.0.0+k0s.0")));
    }
}
