//! The blueprint: the as-built record of a cluster, written after every apply.
//!
//! `blueprint.yaml` says what was installed, from which bundle, on which hosts: every node with
//! its role, addresses and facts, and the digest of every file airlock placed on it. It is
//! written into the output directory and onto every controller, where later runs read it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The blueprint format version; a reader refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// The file name of the blueprint, locally and on controllers.
pub const FILE_NAME: &str = "blueprint.yaml";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blueprint {
    pub format_version: u32,
    /// When the blueprint was written, RFC 3339 in UTC.
    pub written_at: String,
    pub cluster: ClusterRecord,
    pub bundle: BundleRecord,
    pub k0s: K0sRecord,
    pub nodes: Vec<NodeRecord>,
    /// The stacks installed, with the versions the bundle gave them.
    #[serde(default)]
    pub stacks: Vec<StackRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StackRecord {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BundleRecord {
    pub name: String,
    pub version: u64,
    /// The sha256 of the bundle's `bundle.yaml`, which covers every byte of the bundle.
    pub digest: Digest,
    /// The minisign key id that signed the bundle; `None` for a bundle accepted unsigned.
    pub signing_key_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct K0sRecord {
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The Kubernetes node name.
    pub name: String,
    pub role: String,
    pub address: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_address: Option<String>,
    pub os: String,
    pub kernel: String,
    pub architecture: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    pub k0s_version: String,
    /// Every file airlock placed on the host, by path.
    pub files: BTreeMap<String, Digest>,
}

/// A blueprint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlueprintError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the blueprint is not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("unsupported blueprint formatVersion {0}; this airlock reads version {FORMAT_VERSION}")]
    FormatVersion(u32),
}

impl Blueprint {
    /// The installed stacks' versions by stack name.
    pub fn stack_versions(&self) -> BTreeMap<String, String> {
        self.stacks
            .iter()
            .map(|stack| (stack.name.clone(), stack.version.clone()))
            .collect()
    }

    pub fn to_yaml(&self) -> Result<String, BlueprintError> {
        Ok(format!(
            "# The as-built record of cluster {}, written by airlock. Do not edit: `airlock status`\n\
             # compares the cluster with it.\n{}",
            self.cluster.name,
            yaml_serde::to_string(self)?
        ))
    }

    pub fn parse(text: &str) -> Result<Blueprint, BlueprintError> {
        let blueprint: Blueprint = yaml_serde::from_str(text)?;
        if blueprint.format_version != FORMAT_VERSION {
            return Err(BlueprintError::FormatVersion(blueprint.format_version));
        }
        Ok(blueprint)
    }

    /// Writes `blueprint.yaml` into `dir` atomically, creating the directory.
    pub fn write_to(&self, dir: &Path) -> Result<(), BlueprintError> {
        let path = dir.join(FILE_NAME);
        let error = |source| BlueprintError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        let temporary = dir.join(format!(".{FILE_NAME}.tmp"));
        std::fs::write(&temporary, self.to_yaml()?).map_err(error)?;
        std::fs::rename(&temporary, &path).map_err(error)?;
        Ok(())
    }
}

/// The current time in RFC 3339, UTC, to the second.
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
