//! Values with units as other tools write them: Go durations (k0sctl's drain options),
//! Kubernetes quantities (tenant quotas) and Prometheus durations (metrics retention).

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Parses a Go duration such as `120s`, `5m`, `1h30m` or `1.5h`, as Go's `time.ParseDuration`
/// does, except that negative durations are rejected.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected a number with a unit, such as 120s, 5m or 1h30m"
        )
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return Err(invalid());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += number * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats a duration as Go's `time.Duration.String` does: `5m0s`, `2m0s`, `1h0m0s`, `1.5s`,
/// `500ms`. kubectl reads this form in `--timeout`.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => (n as f64 / 1e3, "µs"),
            n => (n as f64 / 1e6, "ms"),
        };
        return format!("{value}{unit}");
    }
    let whole_seconds = duration.as_secs();
    let hours = whole_seconds / 3600;
    let minutes = (whole_seconds % 3600) / 60;
    let seconds = (whole_seconds % 60) as f64 + f64::from(duration.subsec_nanos()) / 1e9;
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&format!("{seconds}s"));
    text
}

/// A Kubernetes resource quantity such as `64`, `500m`, `256Gi` or `1e3`, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity(String);

impl Quantity {
    /// Checks the quantity grammar of Kubernetes (`k8s.io/apimachinery/pkg/api/resource`):
    /// a decimal number, then a binary suffix (Ki…Ei), a decimal suffix (n, u, m, k, M…E) or an
    /// exponent (`e3`). Negative quantities are rejected because no quota can be negative.
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let invalid = || {
            format!(
                "invalid quantity {text:?}: expected a number with an optional unit, such as 64, 500m or 256Gi"
            )
        };
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        if unsigned.starts_with('-') {
            return Err(format!(
                "invalid quantity {text:?}: a quota cannot be negative"
            ));
        }
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let number = &unsigned[..number_len];
        let digits = number.chars().filter(char::is_ascii_digit).count();
        if digits == 0 || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let suffix = &unsigned[number_len..];
        let valid_suffix = match suffix {
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G"
            | "T" | "P" | "E" => true,
            exponent => exponent
                .strip_prefix(['e', 'E'])
                .map(|rest| rest.strip_prefix(['+', '-']).unwrap_or(rest))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())),
        };
        if !valid_suffix {
            return Err(invalid());
        }
        Ok(Quantity(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Checks a Prometheus duration such as `15d`, `2w` or `1y6w`: whole numbers with the units
/// y, w, d, h, m, s and ms, each at most once and in that order, or `0`. This is the pattern of
/// the `Duration` type of prometheus-operator's `monitoring.coreos.com/v1` API.
pub fn check_prometheus_duration(text: &str) -> Result<(), String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected whole numbers with units y, w, d, h, m, s or ms, such as 15d"
        )
    };
    if text == "0" {
        return Ok(());
    }
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = text;
    let mut next_unit = 0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let position = UNITS[next_unit..]
            .iter()
            .position(|u| *u == unit)
            .ok_or_else(invalid)?;
        next_unit += position + 1;
        rest = &rest[unit_len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("120").is_err());
        assert!(parse_go_duration("-5s").is_err());
        assert!(parse_go_duration("5 minutes").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn go_durations_format_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn quantities_follow_kubernetes_grammar() {
        for valid in [
            "64", "0.5", "500m", "256Gi", "1e3", "1E-2", "4k", ".5", "2.",
        ] {
            assert!(Quantity::parse(valid).is_ok(), "{valid} should be valid");
        }
        for invalid in ["", "Gi", "256GB", "1.2.3", "12 Gi", "1e", "-1", "abc"] {
            assert!(
                Quantity::parse(invalid).is_err(),
                "{invalid} should be invalid"
            );
        }
    }

    #[test]
    fn prometheus_durations_keep_unit_order() {
        for valid in ["15d", "2w", "1y6w", "12h30m", "90s", "100ms", "0"] {
            assert!(
                check_prometheus_duration(valid).is_ok(),
                "{valid} should be valid"
            );
        }
        for invalid in ["", "15", "d", "1.5d", "30m1h", "15days", "1d1d"] {
            assert!(
                check_prometheus_duration(invalid).is_err(),
                "{invalid} should be invalid"
            );
        }
    }
}
