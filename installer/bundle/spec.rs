//! Bundle specifications (`bundles/*.yaml`): what a bundle contains and where each artifact
//! comes from.
//!
//! A specification is written by people, so unknown fields are errors that give the line and
//! column, and every name and path is checked before anything is copied. Paths in a
//! specification are relative to the directory of the specification file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bundle::manifest::{ArtifactKind, InstallTarget, Platform};
use crate::digest::Digest;

/// The largest specification airlock reads.
const MAX_SPEC_SIZE: u64 = 4 << 20;

/// A parsed bundle specification.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleSpec {
    pub name: String,
    /// The bundle version; each new bundle for a cluster needs a larger one.
    pub version: u64,
    pub k0s: K0sSpec,
    /// The platform images are resolved to and artifacts are recorded for, unless an entry names
    /// its own; `linux/amd64` by default.
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactSpec>,
    #[serde(default)]
    pub stacks: Vec<StackSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K0sSpec {
    pub version: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StackSpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub artifacts: Vec<ArtifactSpec>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
}

/// A file artifact: the k0s binary, an image archive, a chart, a manifest...
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactSpec {
    pub name: String,
    pub kind: ArtifactKind,
    pub source: Source,
    /// The expected digest. Optional for local files; a mismatch fails the build.
    #[serde(default)]
    pub digest: Option<Digest>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Where the artifact goes on hosts; each kind has a default (see `build`).
    #[serde(default)]
    pub install: Option<InstallTarget>,
}

/// A container image, named in the bundle by `ref`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(rename = "ref")]
    pub reference: String,
    pub source: Source,
    /// The expected digest of the image manifest (after platform resolution).
    #[serde(default)]
    pub digest: Option<Digest>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Where an artifact's bytes come from, written as a map with one key: `{ file: PATH }`,
/// `{ ociLayout: { path: PATH, ref: REF } }`, `{ url: URL }`, `{ chart: { repo, name, version } }`
/// or `{ image: REF }`.
///
/// `bundle build` reads the local variants. The network variants are parsed so that
/// specifications can already name them, and building one fails with a clear error until
/// downloads are implemented.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A local file, relative to the specification.
    File(PathBuf),
    /// An image in a local OCI image layout directory.
    OciLayout(OciLayoutSource),
    /// A file downloaded over HTTPS; the artifact's `digest` pins it.
    Url(String),
    /// A chart from a Helm repository.
    Chart(ChartSource),
    /// An image pulled from a registry by reference.
    Image(String),
}

impl Source {
    const KINDS: &'static [&'static str] = &["file", "ociLayout", "url", "chart", "image"];

    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::OciLayout(_) => "ociLayout",
            Source::Url(_) => "url",
            Source::Chart(_) => "chart",
            Source::Image(_) => "image",
        }
    }
}

// The YAML library maps enums to tags (`!file path`); sources read better as one-key maps, so
// they are parsed by hand.
impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = Source;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a map with one key: file, ociLayout, url, chart or image")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
        use serde::de::Error;
        let Some(kind) = map.next_key::<String>()? else {
            return Err(A::Error::invalid_length(0, &self));
        };
        let source = match kind.as_str() {
            "file" => Source::File(map.next_value()?),
            "ociLayout" => Source::OciLayout(map.next_value()?),
            "url" => Source::Url(map.next_value()?),
            "chart" => Source::Chart(map.next_value()?),
            "image" => Source::Image(map.next_value()?),
            other => return Err(A::Error::unknown_variant(other, Source::KINDS)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "a source has one kind, but `{kind}` and `{extra}` are given"
            )));
        }
        Ok(source)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OciLayoutSource {
    pub path: PathBuf,
    /// The value of the image's `org.opencontainers.image.ref.name` annotation in the layout.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartSource {
    pub repo: String,
    pub name: String,
    pub version: String,
}

/// A specification that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read bundle specification {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bundle specification {path} is larger than {MAX_SPEC_SIZE} bytes")]
    TooLarge { path: PathBuf },
    #[error("invalid bundle specification {path}: {source}")]
    Yaml {
        path: PathBuf,
        source: yaml_serde::Error,
    },
    #[error("invalid bundle specification {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl BundleSpec {
    /// Reads and checks a specification file.
    pub fn load(path: &Path) -> Result<BundleSpec, SpecError> {
        let read = |source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SPEC_SIZE + 1), &mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_SPEC_SIZE {
            return Err(SpecError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let spec: BundleSpec = yaml_serde::from_slice(&text).map_err(|source| SpecError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        spec.validate().map_err(|reason| SpecError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(spec)
    }

    /// Returns the platform for entries that name none.
    pub fn default_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::linux_amd64)
    }

    fn validate(&self) -> Result<(), String> {
        check_name("bundle", &self.name, is_dns_label)?;
        if self.k0s.version.is_empty()
            || self
                .k0s
                .version
                .chars()
                .any(|c| c.is_whitespace() || c == '/')
        {
            return Err(format!("invalid k0s version {:?}", self.k0s.version));
        }

        let mut stacks = HashSet::new();
        for stack in &self.stacks {
            check_name("stack", &stack.name, is_dns_label)?;
            if !stacks.insert(&stack.name) {
                return Err(format!("stack {:?} is listed twice", stack.name));
            }
            if stack.version.is_empty() || stack.version.chars().any(char::is_whitespace) {
                return Err(format!(
                    "stack {:?} has an invalid version {:?}",
                    stack.name, stack.version
                ));
            }
        }

        let mut names = HashSet::new();
        let artifacts = self
            .artifacts
            .iter()
            .chain(self.stacks.iter().flat_map(|s| &s.artifacts));
        for artifact in artifacts {
            check_name("artifact", &artifact.name, is_artifact_name)?;
            if artifact.kind == ArtifactKind::Image {
                return Err(format!(
                    "artifact {:?}: list images under a stack's `images`, not as artifacts",
                    artifact.name
                ));
            }
            if matches!(artifact.source, Source::OciLayout(_) | Source::Image(_)) {
                return Err(format!(
                    "artifact {:?}: source {} is for images; use file, url or chart",
                    artifact.name,
                    artifact.source.kind()
                ));
            }
            if !names.insert(artifact.name.as_str()) {
                return Err(format!("artifact {:?} is listed twice", artifact.name));
            }
        }

        for stack in &self.stacks {
            for image in &stack.images {
                check_name("image ref", &image.reference, is_image_reference)?;
                if !matches!(image.source, Source::OciLayout(_) | Source::Image(_)) {
                    return Err(format!(
                        "image {:?}: source {} is for files; use ociLayout or image",
                        image.reference,
                        image.source.kind()
                    ));
                }
                if !names.insert(image.reference.as_str()) {
                    return Err(format!("image {:?} is listed twice", image.reference));
                }
            }
        }
        Ok(())
    }
}

fn check_name(what: &str, name: &str, valid: fn(&str) -> bool) -> Result<(), String> {
    if valid(name) {
        Ok(())
    } else {
        Err(format!("invalid {what} name {name:?}"))
    }
}

/// Checks for a lowercase RFC 1123 label: stack names become directory names on hosts.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks for letters, digits and `._+-`, starting with a letter or digit: artifact names may
/// become file names on hosts.
fn is_artifact_name(name: &str) -> bool {
    name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// Checks for the characters the OCI specification allows in `org.opencontainers.image.ref.name`.
fn is_image_reference(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@/+".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<BundleSpec, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, yaml).unwrap();
        BundleSpec::load(&path).map_err(|error| error.to_string())
    }

    const GOOD: &str = "\
name: lab
version: 3
k0s:
  version: v1.35.3+k0s.0
artifacts:
  - name: k0s
    kind: k0s-binary
    platform: linux/amd64
    source: { file: bin/k0s }
stacks:
  - name: example
    version: 1.0.0
    artifacts:
      - { name: example-chart, kind: chart, source: { file: example-1.0.0.tgz } }
    images:
      - { ref: registry.example/app:1.0, source: { ociLayout: { path: oci/app, ref: '1.0' } } }
";

    #[test]
    fn spec_parses_every_source_kind() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.version, 3);
        assert_eq!(spec.artifacts[0].source, Source::File("bin/k0s".into()));
        let image = &spec.stacks[0].images[0];
        assert_eq!(
            image.source,
            Source::OciLayout(OciLayoutSource {
                path: "oci/app".into(),
                reference: "1.0".into()
            })
        );
        let url = GOOD.replace(
            "{ file: bin/k0s }",
            "{ url: 'https://example.invalid/k0s' }",
        );
        assert_eq!(parse(&url).unwrap().artifacts[0].source.kind(), "url");
    }

    #[test]
    fn spec_unknown_field_names_line_and_column() {
        let error =
            parse(&GOOD.replace("    platform: linux/amd64\n", "    platfrom: linux/amd64\n"))
                .unwrap_err();
        assert!(error.contains("unknown field `platfrom`"), "{error}");
        assert!(error.contains("line 8 column 5"), "{error}");
    }

    #[test]
    fn spec_unknown_source_kind_is_rejected() {
        let error = parse(&GOOD.replace("{ file: bin/k0s }", "{ fiel: bin/k0s }")).unwrap_err();
        assert!(error.contains("unknown variant `fiel`"), "{error}");
    }

    #[test]
    fn spec_rejects_image_source_for_file_artifact() {
        let error =
            parse(&GOOD.replace("{ file: bin/k0s }", "{ image: 'registry.example/k0s:1' }"))
                .unwrap_err();
        assert!(error.contains("source image is for images"), "{error}");
    }

    #[test]
    fn spec_rejects_duplicate_artifact() {
        let error = parse(&GOOD.replace("name: example-chart", "name: k0s")).unwrap_err();
        assert!(
            error.contains("artifact \"k0s\" is listed twice"),
            "{error}"
        );
    }

    #[test]
    fn spec_rejects_invalid_stack_name() {
        let error = parse(&GOOD.replace("name: example\n", "name: Example_Stack\n")).unwrap_err();
        assert!(error.contains("invalid stack name"), "{error}");
    }
}
