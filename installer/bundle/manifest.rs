//! `bundle.yaml`: the description of a bundle that its signature covers.
//!
//! It names the bundle, its version and the k0s version, and lists the stacks and every artifact
//! with where it goes on a host. Then it lists every other file of the bundle directory with its
//! size and digest: `oci-layout`, `index.json` and each blob, layers and configs included. So the
//! chain "the signature covers bundle.yaml, bundle.yaml covers every byte" holds without
//! exception; only `bundle.yaml` itself and its signature `bundle.yaml.minisig` are not listed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;

/// The `formatVersion` this airlock writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest `bundle.yaml` airlock reads; one with 100,000 blobs is about 15 MB.
pub const MAX_MANIFEST_SIZE: u64 = 64 << 20;

/// The placeholder for the k0s data directory in install paths; `apply` replaces it with the
/// host's data directory (`/var/lib/k0s` unless the cluster file sets another).
pub const DATA_DIR_PLACEHOLDER: &str = "<data-dir>";

/// The parsed `bundle.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    pub format_version: u32,
    pub name: String,
    /// The bundle's version; a newer bundle for the same cluster always has a larger one.
    pub version: u64,
    pub k0s: K0sRelease,
    #[serde(default)]
    pub stacks: Vec<Stack>,
    pub artifacts: Vec<Artifact>,
    /// The two files of the OCI image layout besides the blobs.
    pub layout: LayoutFiles,
    /// Every file under `blobs/sha256/`, sorted by digest.
    pub blobs: Vec<Blob>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K0sRelease {
    pub version: String,
}

/// An add-on stack (kubevirt, gpu-operator...) and its version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stack {
    pub name: String,
    pub version: String,
}

/// One artifact: a file installed on hosts, or a container image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Artifact {
    pub name: String,
    pub kind: ArtifactKind,
    pub media_type: String,
    /// The blob's digest; for an image, the digest of its OCI image manifest.
    pub digest: Digest,
    /// The blob's size in bytes; for an image, the size of its manifest.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The image reference, for artifacts of kind `image`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The artifact's destination on hosts. Images have none, because `apply` imports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallTarget>,
}

/// The files `oci-layout` and `index.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayoutFiles {
    pub oci_layout: Blob,
    pub index: Blob,
}

/// A file's size and digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
}

/// What an artifact is, which decides how `apply` uses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    /// The k0s executable.
    K0sBinary,
    /// A tar of an OCI image layout that k0s imports from `<data-dir>/images/`.
    ImageArchive,
    /// A Helm chart archive (`.tgz`).
    Chart,
    /// A Kubernetes manifest for the k0s manifest deployer.
    Manifest,
    /// A container image stored as OCI manifest, config and layers in the layout.
    Image,
    /// A kind this version of airlock has no special handling for: lowercase words joined by `-`.
    Other(String),
}

impl ArtifactKind {
    pub fn as_str(&self) -> &str {
        match self {
            ArtifactKind::K0sBinary => "k0s-binary",
            ArtifactKind::ImageArchive => "image-archive",
            ArtifactKind::Chart => "chart",
            ArtifactKind::Manifest => "manifest",
            ArtifactKind::Image => "image",
            ArtifactKind::Other(kind) => kind,
        }
    }

    /// Returns the media type recorded when the specification does not give one.
    pub fn default_media_type(&self) -> &'static str {
        match self {
            ArtifactKind::K0sBinary => "application/octet-stream",
            ArtifactKind::ImageArchive => "application/vnd.oci.image.layout.v1+tar",
            ArtifactKind::Chart => "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            ArtifactKind::Manifest => "application/yaml",
            ArtifactKind::Image => crate::bundle::oci::MEDIA_TYPE_MANIFEST,
            ArtifactKind::Other(_) => "application/octet-stream",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ArtifactKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "k0s-binary" => ArtifactKind::K0sBinary,
            "image-archive" => ArtifactKind::ImageArchive,
            "chart" => ArtifactKind::Chart,
            "manifest" => ArtifactKind::Manifest,
            "image" => ArtifactKind::Image,
            other if is_kebab_word_list(other) => ArtifactKind::Other(other.to_string()),
            other => {
                return Err(format!(
                    "invalid artifact kind {other:?}: expected k0s-binary, image-archive, chart, \
                     manifest, image, or another kind in lowercase words joined by '-'"
                ));
            }
        })
    }
}

fn is_kebab_word_list(text: &str) -> bool {
    !text.is_empty()
        && text.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// An OCI platform written `os/architecture[/variant]`, such as `linux/amd64` or `linux/arm/v7`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, the platform of bundles whose specification names none.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "invalid platform {text:?}: expected os/architecture[/variant], such as linux/amd64"
            )
        };
        let parts: Vec<&str> = text.split('/').collect();
        let valid_word = |word: &&str| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid_word) {
            return Err(invalid());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|variant| variant.to_string()),
        })
    }
}

/// An artifact's destination on hosts: path, mode and which hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallTarget {
    pub path: InstallPath,
    pub mode: FileMode,
    pub hosts: HostSelector,
}

/// An absolute destination path on a host, which may start with [`DATA_DIR_PLACEHOLDER`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstallPath(String);

impl InstallPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the path on a host whose k0s data directory is `data_dir`.
    pub fn resolve(&self, data_dir: &str) -> String {
        match self.0.strip_prefix(DATA_DIR_PLACEHOLDER) {
            Some(rest) => format!("{}{rest}", data_dir.trim_end_matches('/')),
            None => self.0.clone(),
        }
    }
}

impl FromStr for InstallPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.strip_prefix(DATA_DIR_PLACEHOLDER).unwrap_or(text);
        let reason = if !rest.starts_with('/') {
            Some(format!(
                "it must be absolute or start with {DATA_DIR_PLACEHOLDER}/"
            ))
        } else if rest.ends_with('/') {
            Some("it must name a file, not a directory".to_string())
        } else if rest[1..]
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            Some("it must not contain empty, '.' or '..' components".to_string())
        } else if rest.contains(DATA_DIR_PLACEHOLDER) || rest.chars().any(char::is_control) {
            Some(format!(
                "{DATA_DIR_PLACEHOLDER} may only start it, and it must not contain control characters"
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => Err(format!("invalid install path {text:?}: {reason}")),
            None => Ok(InstallPath(text.to_string())),
        }
    }
}

impl fmt::Display for InstallPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unix permission bits, written as an octal string such as `"0755"` so that YAML 1.1 and 1.2
/// readers agree on the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl FromStr for FileMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            || format!("invalid file mode {text:?}: expected an octal string such as \"0644\"");
        if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(invalid());
        }
        u32::from_str_radix(text, 8)
            .map(FileMode)
            .map_err(|_| invalid())
    }
}

/// The hosts that receive an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostSelector {
    All,
    Controllers,
    /// Hosts that run pods: workers, controller+worker and single-node hosts.
    Workloads,
}

/// Serde through `Display` and `FromStr`, for the value types above.
macro_rules! serde_via_string {
    ($($type:ty),*) => {$(
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_string!(ArtifactKind, Platform, InstallPath, FileMode);

/// An invalid `bundle.yaml`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("unsupported formatVersion {found}: this airlock reads version {FORMAT_VERSION}")]
    FormatVersion { found: u32 },
    #[error("invalid bundle: {0}")]
    Invalid(String),
}

impl BundleManifest {
    /// Parses and checks a `bundle.yaml`: unknown fields, duplicate names, artifacts whose blob is
    /// not listed, and blobs out of order are all errors.
    pub fn parse(text: &[u8]) -> Result<BundleManifest, ManifestError> {
        let manifest: BundleManifest = yaml_serde::from_slice(text)?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ManifestError::FormatVersion {
                found: manifest.format_version,
            });
        }
        manifest.validate().map_err(ManifestError::Invalid)?;
        Ok(manifest)
    }

    /// Serialises the manifest as written to `bundle.yaml`.
    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).expect("a bundle manifest always serialises")
    }

    /// Checks the rules [`Self::parse`] enforces beyond the YAML schema.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!("invalid bundle name {:?}", self.name));
        }
        let mut stacks = HashSet::new();
        for stack in &self.stacks {
            if !stacks.insert(stack.name.as_str()) {
                return Err(format!("stack {:?} is listed twice", stack.name));
            }
        }

        let blobs = self.blob_sizes();
        if blobs.len() != self.blobs.len() || !self.blobs.is_sorted_by_key(|blob| blob.digest) {
            return Err("blobs must be sorted by digest and listed once each".to_string());
        }
        let mut names = HashSet::new();
        let mut install_paths = HashMap::new();
        for artifact in &self.artifacts {
            if !names.insert((artifact.name.as_str(), artifact.platform.as_ref())) {
                return Err(format!("artifact {:?} is listed twice", artifact.name));
            }
            if let Some(stack) = &artifact.stack
                && !stacks.contains(stack.as_str())
            {
                return Err(format!(
                    "artifact {:?} names stack {stack:?}, which is not listed",
                    artifact.name
                ));
            }
            match blobs.get(&artifact.digest) {
                Some(&size) if size == artifact.size => {}
                Some(&size) => {
                    return Err(format!(
                        "artifact {:?} has size {} but its blob {} has size {size}",
                        artifact.name, artifact.size, artifact.digest
                    ));
                }
                None => {
                    return Err(format!(
                        "artifact {:?} has digest {}, which is not among the blobs",
                        artifact.name, artifact.digest
                    ));
                }
            }
            if artifact.kind == ArtifactKind::Image && artifact.reference.is_none() {
                return Err(format!("image artifact {:?} has no ref", artifact.name));
            }
            // Two artifacts for the same hosts and path would overwrite each other; artifacts
            // for different platforms may share a path, such as /usr/local/bin/k0s.
            if let Some(install) = &artifact.install
                && let Some(other) = install_paths.insert(
                    (install.path.as_str(), artifact.platform.as_ref()),
                    &artifact.name,
                )
            {
                return Err(format!(
                    "artifacts {other:?} and {:?} are both installed to {}",
                    artifact.name, install.path
                ));
            }
        }
        Ok(())
    }

    /// Returns the size of every blob, by digest.
    pub fn blob_sizes(&self) -> HashMap<Digest, u64> {
        self.blobs
            .iter()
            .map(|blob| (blob.digest, blob.size))
            .collect()
    }

    /// Every file the bundle directory must contain besides `bundle.yaml` and its signature,
    /// by path relative to the bundle directory.
    pub fn expected_files(&self) -> BTreeMap<String, Blob> {
        let mut files = BTreeMap::new();
        files.insert(super::OCI_LAYOUT_FILE.to_string(), self.layout.oci_layout);
        files.insert(super::INDEX_FILE.to_string(), self.layout.index);
        for blob in &self.blobs {
            files.insert(blob_path(&blob.digest), *blob);
        }
        files
    }

    /// Returns the total size of the files [`Self::expected_files`] lists.
    pub fn total_size(&self) -> u64 {
        self.layout.oci_layout.size
            + self.layout.index.size
            + self.blobs.iter().map(|b| b.size).sum::<u64>()
    }
}

/// Returns the path of a blob relative to the bundle directory: `blobs/sha256/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", Digest::ALGORITHM, digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleManifest {
        let blob = Blob {
            digest: Digest::of_bytes(b"k0s"),
            size: 3,
        };
        BundleManifest {
            format_version: FORMAT_VERSION,
            name: "lab".into(),
            version: 7,
            k0s: K0sRelease {
                version: "v1.35.3+k0s.0".into(),
            },
            stacks: vec![Stack {
                name: "example".into(),
                version: "1.0.0".into(),
            }],
            artifacts: vec![Artifact {
                name: "k0s".into(),
                kind: ArtifactKind::K0sBinary,
                media_type: "application/octet-stream".into(),
                digest: blob.digest,
                size: 3,
                platform: Some(Platform::linux_amd64()),
                stack: None,
                reference: None,
                install: Some(InstallTarget {
                    path: "/usr/local/bin/k0s".parse().unwrap(),
                    mode: FileMode(0o755),
                    hosts: HostSelector::All,
                }),
            }],
            layout: LayoutFiles {
                oci_layout: Blob {
                    digest: Digest::of_bytes(b"layout"),
                    size: 6,
                },
                index: Blob {
                    digest: Digest::of_bytes(b"index"),
                    size: 5,
                },
            },
            blobs: vec![blob],
        }
    }

    #[test]
    fn manifest_round_trips_through_yaml() {
        let manifest = sample();
        let yaml = manifest.to_yaml();
        assert!(yaml.contains("mode: '0755'"), "{yaml}");
        assert_eq!(BundleManifest::parse(yaml.as_bytes()).unwrap(), manifest);
    }

    #[test]
    fn manifest_rejects_unknown_field_with_location() {
        let yaml = sample()
            .to_yaml()
            .replace("name: lab", "name: lab\ncolour: blue");
        let error = BundleManifest::parse(yaml.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `colour`"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn manifest_rejects_artifact_without_blob() {
        let mut manifest = sample();
        manifest.blobs.clear();
        let error = BundleManifest::parse(manifest.to_yaml().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("not among the blobs"), "{error}");
    }

    #[test]
    fn manifest_rejects_shared_install_path() {
        let mut manifest = sample();
        let mut copy = manifest.artifacts[0].clone();
        copy.name = "k0s-copy".into();
        manifest.artifacts.push(copy.clone());
        let error = BundleManifest::parse(manifest.to_yaml().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("are both installed to /usr/local/bin/k0s"),
            "{error}"
        );

        // The same path for another platform is fine.
        manifest.artifacts[1].platform = Some("linux/arm64".parse().unwrap());
        assert!(BundleManifest::parse(manifest.to_yaml().as_bytes()).is_ok());
    }

    #[test]
    fn manifest_rejects_other_format_version() {
        let mut manifest = sample();
        manifest.format_version = 2;
        let error = BundleManifest::parse(manifest.to_yaml().as_bytes()).unwrap_err();
        assert!(matches!(error, ManifestError::FormatVersion { found: 2 }));
    }

    #[test]
    fn install_path_accepts_data_dir_placeholder() {
        let path: InstallPath = "<data-dir>/images/k0s.tar".parse().unwrap();
        assert_eq!(path.resolve("/var/lib/k0s/"), "/var/lib/k0s/images/k0s.tar");
        for bad in [
            "images/k0s.tar",
            "/usr/../etc/passwd",
            "/usr/local/bin/",
            "<data-dir>x",
            "/a//b",
        ] {
            assert!(bad.parse::<InstallPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_and_mode_parse_strictly() {
        assert_eq!(
            "linux/arm/v7".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("Linux/AMD64".parse::<Platform>().is_err());
        assert_eq!("0644".parse::<FileMode>().unwrap(), FileMode(0o644));
        assert!("0844".parse::<FileMode>().is_err());
        assert!("10644".parse::<FileMode>().is_err());
    }

    #[test]
    fn artifact_kind_accepts_new_kinds() {
        assert_eq!(
            "chart".parse::<ArtifactKind>().unwrap(),
            ArtifactKind::Chart
        );
        assert_eq!(
            "model-weights".parse::<ArtifactKind>().unwrap(),
            ArtifactKind::Other("model-weights".into())
        );
        assert!("Model Weights".parse::<ArtifactKind>().is_err());
    }
}
