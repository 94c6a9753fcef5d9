//! The blueprint: what airlock installed, from which artifacts, under which controls.
//!
//! Every apply writes four files into `--out` and onto every controller
//! (`<data-dir>/airlock/`):
//! - `blueprint.yaml` ([`record`]): the as-built record that `status` compares the cluster with;
//! - `report.html` ([`report`]): topology, versions and the compliance matrix ([`compliance`]),
//!   computed from facts checked during the run ([`live`]);
//! - `sbom.spdx.json` ([`sbom`]): SPDX 2.3 of every deployed artifact;
//! - `audit.log` and `audit.log.head` ([`audit`]): the hash-chained record of every action,
//!   appended by every run and copied to the controllers ([`controllers`]).
//!
//! `--sign-blueprint KEY` adds minisign signatures of `blueprint.yaml` and `audit.log.head`
//! ([`sign`]). `airlock status` reports drift between the blueprint and the cluster ([`drift`]).

pub mod artifacts;
pub mod audit;
pub mod compliance;
pub mod controllers;
pub mod drift;
pub mod live;
pub mod record;
pub mod report;
pub mod sbom;
pub mod sign;

use std::path::{Path, PathBuf};

pub use record::{Blueprint, FILE_NAME, FORMAT_VERSION};
pub use sign::SigningKey;

/// A blueprint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlueprintError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the blueprint is not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("unsupported blueprint formatVersion {0}; this airlock reads version {FORMAT_VERSION}")]
    FormatVersion(u32),
}

/// Writes `content` to `dir/name` through a temporary file and a rename, creating `dir`.
pub fn write_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), BlueprintError> {
    let path = dir.join(name);
    let error = |source| BlueprintError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, content).map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    Ok(())
}

/// Returns the current time in RFC 3339, UTC, to the second.
pub fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(seconds)
}

/// Formats seconds since the epoch as RFC 3339 in UTC (proleptic Gregorian calendar).
pub fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil-from-days, after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_415_010), "2026-12-04T20:10:10Z");
    }
}
