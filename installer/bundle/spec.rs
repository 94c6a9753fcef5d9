//! Bundle specifications (`bundles/*.yaml`): what a bundle contains and where each artifact
//! comes from.
//!
//! A specification is written by people, so unknown fields are errors that give the line and
//! column, and every name, path, URL and image reference is checked before anything is copied or
//! downloaded. Paths in a specification are relative to the directory of the specification file.
//!
//! A stack whose entry has `imageList` gets every image of its list under `images/` (the list the
//! stacks module renders with) added to its `images`, so that the bundle carries what the stack's
//! templates pin. [`BundleSpec::load`] expands those lists, so the rest of the build reads one
//! list of images per stack.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bundle::manifest::{ArtifactKind, InstallTarget, Platform};
use crate::digest::Digest;
use crate::stacks::{self, ImageRef};

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
    /// Hosts that `bundle build` reaches over plain HTTP, written as in URLs and image references
    /// (`host` or `host:port`). Every other host is reached over HTTPS, and an `http://` URL to a
    /// host not listed here is an error.
    #[serde(default)]
    pub plain_http: Vec<String>,
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
    /// Pulls the images of the stack's list under `images/`; only for the stacks airlock renders.
    #[serde(default)]
    pub image_list: Option<ImageListSpec>,
}

/// Which images of a stack's image list a bundle carries: all of them unless skipped.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageListSpec {
    /// Keys of images the site does not need, such as `driver` where GPU hosts bring their own
    /// NVIDIA driver.
    #[serde(default)]
    pub skip: Vec<String>,
    /// The `<os><version>` suffixes (such as `ubuntu24.04`) of images whose tag the operator
    /// completes per node; one image is pulled per suffix.
    #[serde(default)]
    pub os_suffixes: Vec<String>,
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
    // NOTE: a bundle carries one platform of each image, because index.json and the stacks name
    // images by reference alone; a cluster of two architectures cannot be served yet.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Where an artifact's bytes come from, written as a map with one key: `{ file: PATH }`,
/// `{ ociLayout: { path: PATH, ref: REF } }`, `{ url: URL }`, `{ chart: { repo, name, version } }`
/// or `{ image: REF }`.
///
/// `file` and `ociLayout` are read from disk. `url`, `chart` and `image` are downloaded, and
/// their digests are pinned by the specification or recorded in its lock file.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A local file, relative to the specification.
    File(PathBuf),
    /// An image in a local OCI image layout directory.
    OciLayout(OciLayoutSource),
    /// A file downloaded over HTTPS, or HTTP for hosts listed in `plainHttp`.
    Url(String),
    /// A chart from a Helm repository: a classic one (`index.yaml`) or an OCI registry
    /// (`oci://`).
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

    /// Returns whether `bundle build` downloads this source.
    pub fn is_remote(&self) -> bool {
        matches!(self, Source::Url(_) | Source::Chart(_) | Source::Image(_))
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
    /// The repository: `https://…` for a classic Helm repository, whose `index.yaml` lists the
    /// chart, or `oci://registry/path` for charts stored as OCI artifacts.
    pub repo: String,
    pub name: String,
    pub version: String,
}

impl ChartSource {
    /// Returns the registry path of an OCI chart (`registry/path/name`), or `None` for a classic
    /// repository.
    pub fn oci_repository(&self) -> Option<String> {
        self.repo
            .strip_prefix("oci://")
            .map(|rest| format!("{}/{}", rest.trim_end_matches('/'), self.name))
    }

    /// Returns the tag of the chart in an OCI registry: its version, with `+` replaced by `_`
    /// because tags cannot contain `+` (Helm 3 does the same).
    pub fn oci_tag(&self) -> String {
        self.version.replace('+', "_")
    }
}

impl std::fmt::Display for ChartSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chart {} {} from {}", self.name, self.version, self.repo)
    }
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
        let mut spec: BundleSpec =
            yaml_serde::from_slice(&text).map_err(|source| SpecError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        let invalid = |reason| SpecError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        spec.expand_image_lists().map_err(invalid)?;
        spec.validate().map_err(invalid)?;
        Ok(spec)
    }

    /// Returns the lock file of the specification at `spec_path`: the same name with the
    /// extension `.lock`, in the same directory.
    pub fn lock_path(spec_path: &Path) -> PathBuf {
        spec_path.with_extension("lock")
    }

    /// Returns whether `authority` (`host` or `host:port`) is listed in `plainHttp`.
    pub fn allows_plain_http(&self, authority: &str) -> bool {
        self.plain_http.iter().any(|host| host == authority)
    }

    /// Adds the images of each `imageList` to its stack's `images`. An image the stack already
    /// lists by the same reference is kept as written, so a specification can pin the digest of
    /// one image of a list.
    fn expand_image_lists(&mut self) -> Result<(), String> {
        for stack in &mut self.stacks {
            let Some(selection) = &stack.image_list else {
                continue;
            };
            let known = stacks::Stack::from_name(&stack.name).ok_or_else(|| {
                let names: Vec<&str> = stacks::Stack::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "stack {:?} has no image list; `imageList` works for the stacks {}",
                    stack.name,
                    names.join(", ")
                )
            })?;
            let listed = stacks::image_list(known).map_err(|error| error.to_string())?;
            for key in &selection.skip {
                if !listed.iter().any(|image| &image.key == key) {
                    let keys: Vec<&str> = listed.iter().map(|image| image.key.as_str()).collect();
                    return Err(format!(
                        "stack {:?}: imageList.skip names {key:?}, which is not in images/{}.yaml (its keys: {})",
                        stack.name,
                        known.name(),
                        keys.join(", ")
                    ));
                }
            }
            for image in listed
                .iter()
                .filter(|image| !selection.skip.contains(&image.key))
            {
                let references = if image.os_suffix {
                    if selection.os_suffixes.is_empty() {
                        return Err(format!(
                            "stack {:?}: image {:?} ({}) needs one tag per operating system of the hosts; \
                             set imageList.osSuffixes (for example [ubuntu24.04]) or add {:?} to imageList.skip",
                            stack.name, image.key, image.reference, image.key
                        ));
                    }
                    selection
                        .os_suffixes
                        .iter()
                        .map(|suffix| format!("{}-{suffix}", image.reference))
                        .collect()
                } else {
                    vec![image.reference.clone()]
                };
                for reference in references {
                    if stack.images.iter().any(|i| i.reference == reference) {
                        continue;
                    }
                    stack.images.push(ImageSpec {
                        source: Source::Image(reference.clone()),
                        reference,
                        digest: None,
                        platform: None,
                    });
                }
            }
        }
        Ok(())
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
        let mut urls = std::collections::HashMap::new();
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
            // A kind airlock has no handling for is allowed, but only with an explicit `install`,
            // so a misspelt kind is caught here rather than after its file was copied.
            if let ArtifactKind::Other(kind) = &artifact.kind
                && artifact.install.is_none()
            {
                const KNOWN: [&str; 4] = ["k0s-binary", "image-archive", "chart", "manifest"];
                let hint = match crate::config::closest(kind, &KNOWN) {
                    Some(known) => format!("did you mean `kind: {known}`? "),
                    None => String::new(),
                };
                return Err(format!(
                    "artifact {:?}: unknown kind {kind:?}; {hint}The kinds airlock installs are {}; \
                     another kind needs `install` to say where it goes",
                    artifact.name,
                    KNOWN.join(", ")
                ));
            }
            if let Source::Chart(_) = &artifact.source
                && artifact.kind != ArtifactKind::Chart
            {
                return Err(format!(
                    "artifact {:?}: a chart source needs `kind: chart`",
                    artifact.name
                ));
            }
            self.check_remote_source(&artifact.source)
                .map_err(|reason| format!("artifact {:?}: {reason}", artifact.name))?;
            // Two downloads of one URL would write the same partial file.
            if let Source::Url(url) = &artifact.source
                && let Some(first) = urls.insert(url.as_str(), artifact.name.as_str())
            {
                return Err(format!(
                    "artifacts {first:?} and {:?} both download {url}; list it once",
                    artifact.name
                ));
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
                self.check_remote_source(&image.source)
                    .map_err(|reason| format!("image {:?}: {reason}", image.reference))?;
            }
        }

        for host in &self.plain_http {
            let valid = !host.is_empty()
                && !host.contains("://")
                && !host.contains('/')
                && !host.chars().any(|c| c.is_whitespace() || c == '@');
            if !valid {
                return Err(format!(
                    "invalid plainHttp entry {host:?}: expected a host or host:port, such as 127.0.0.1:5000"
                ));
            }
        }
        Ok(())
    }

    /// Checks a URL, chart repository or image reference before anything is downloaded.
    fn check_remote_source(&self, source: &Source) -> Result<(), String> {
        match source {
            Source::Url(url) => self.check_url(url, "url").map(|_| ()),
            Source::Chart(chart) => {
                if chart.name.is_empty()
                    || !chart
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(format!("invalid chart name {:?}", chart.name));
                }
                if chart.version.is_empty()
                    || chart.version.chars().any(|c| c.is_whitespace() || c == '/')
                {
                    return Err(format!("invalid chart version {:?}", chart.version));
                }
                match chart.oci_repository() {
                    Some(repository) => {
                        let reference = format!("{repository}:{}", chart.oci_tag());
                        ImageRef::parse(&reference)
                            .map(|_| ())
                            .map_err(|error| format!("invalid OCI chart repository: {error}"))
                    }
                    None => self.check_url(&chart.repo, "chart repository").map(|_| ()),
                }
            }
            Source::Image(reference) => ImageRef::parse(reference)
                .map(|_| ())
                .map_err(|error| error.to_string()),
            Source::File(_) | Source::OciLayout(_) => Ok(()),
        }
    }

    /// Checks that `text` is an absolute HTTPS URL, or HTTP to a host listed in `plainHttp`,
    /// without credentials, which would end up in logs and lock files.
    fn check_url(&self, text: &str, what: &str) -> Result<url::Url, String> {
        let url =
            url::Url::parse(text).map_err(|error| format!("invalid {what} {text:?}: {error}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{what} {text:?} contains credentials; remove them from the URL"
            ));
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.allows_plain_http(&url_authority(&url)) => Ok(url),
            "http" => Err(format!(
                "{what} {text:?} uses plain HTTP; use https://, or list {:?} under plainHttp",
                url_authority(&url)
            )),
            other => Err(format!(
                "{what} {text:?} has the scheme {other:?}; expected https:// (or http:// for hosts under plainHttp)"
            )),
        }
    }
}

/// Returns `host` or `host:port` of a URL, as `plainHttp` lists hosts.
pub fn url_authority(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
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
    fn spec_plain_http_needs_listed_host() {
        let http = GOOD.replace("{ file: bin/k0s }", "{ url: 'http://127.0.0.1:8080/k0s' }");
        let error = parse(&http).unwrap_err();
        assert!(error.contains("uses plain HTTP"), "{error}");
        assert!(
            error.contains("list \"127.0.0.1:8080\" under plainHttp"),
            "{error}"
        );

        let listed = format!("plainHttp: ['127.0.0.1:8080']\n{http}");
        assert!(parse(&listed).unwrap().allows_plain_http("127.0.0.1:8080"));
        let other_port = format!("plainHttp: ['127.0.0.1:8081']\n{http}");
        assert!(parse(&other_port).is_err());
    }

    #[test]
    fn spec_rejects_credentials_and_other_schemes() {
        for (url, expected) in [
            (
                "https://user:secret@example.invalid/k0s",
                "contains credentials",
            ),
            ("ftp://example.invalid/k0s", "has the scheme \"ftp\""),
            ("not a url", "invalid url"),
        ] {
            let error = parse(&GOOD.replace("{ file: bin/k0s }", &format!("{{ url: '{url}' }}")))
                .unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn spec_rejects_one_url_twice() {
        let yaml = GOOD
            .replace(
                "{ file: bin/k0s }",
                "{ url: 'https://example.invalid/k0s' }",
            )
            .replace(
                "source: { file: example-1.0.0.tgz }",
                "source: { url: 'https://example.invalid/k0s' }",
            );
        let error = parse(&yaml).unwrap_err();
        assert!(
            error.contains("both download https://example.invalid/k0s"),
            "{error}"
        );
    }

    #[test]
    fn spec_misspelt_kind_names_the_closest() {
        let yaml = GOOD.replace("kind: k0s-binary", "kind: k0s-binray");
        let error = parse(&yaml).unwrap_err();
        assert!(error.contains("unknown kind \"k0s-binray\""), "{error}");
        assert!(
            error.contains("did you mean `kind: k0s-binary`?"),
            "{error}"
        );
    }

    #[test]
    fn spec_chart_source_needs_chart_kind() {
        let yaml = GOOD.replace(
            "{ file: bin/k0s }",
            "{ chart: { repo: 'oci://registry.example/charts', name: k0s, version: 1.0.0 } }",
        );
        let error = parse(&yaml).unwrap_err();
        assert!(
            error.contains("a chart source needs `kind: chart`"),
            "{error}"
        );
    }

    #[test]
    fn image_list_adds_every_listed_image() {
        let yaml = "name: t\nversion: 1\nk0s: { version: v1.36.3+k0s.0 }\nstacks:\n  - name: kubevirt\n    version: v1.9.0\n    imageList: {}\n";
        let spec = parse(yaml).unwrap();
        let images = &spec.stacks[0].images;
        let listed = stacks::image_list(stacks::Stack::Kubevirt).unwrap();
        assert_eq!(images.len(), listed.len());
        for (image, listed) in images.iter().zip(&listed) {
            assert_eq!(image.reference, listed.reference);
            assert_eq!(image.source, Source::Image(listed.reference.clone()));
        }
    }

    #[test]
    fn image_list_expands_os_suffixes_and_skips() {
        let base = "name: t\nversion: 1\nk0s: { version: v1.36.3+k0s.0 }\nstacks:\n  - name: gpu-operator\n    version: v26.7.0\n";
        let error = parse(&format!("{base}    imageList: {{}}\n")).unwrap_err();
        assert!(error.contains("set imageList.osSuffixes"), "{error}");

        let spec = parse(&format!(
            "{base}    imageList: {{ osSuffixes: [ubuntu24.04, rhel9.6] }}\n"
        ))
        .unwrap();
        let references: Vec<&str> = spec.stacks[0]
            .images
            .iter()
            .map(|image| image.reference.as_str())
            .collect();
        assert!(references.contains(&"nvcr.io/nvidia/driver:595.91.07-ubuntu24.04"));
        assert!(references.contains(&"nvcr.io/nvidia/driver:595.91.07-rhel9.6"));

        let skipped = parse(&format!("{base}    imageList: {{ skip: [driver] }}\n")).unwrap();
        assert!(
            skipped.stacks[0]
                .images
                .iter()
                .all(|image| !image.reference.contains("/driver:"))
        );
        let typo = parse(&format!("{base}    imageList: {{ skip: [drivers] }}\n")).unwrap_err();
        assert!(typo.contains("imageList.skip names \"drivers\""), "{typo}");
    }

    #[test]
    fn image_list_keeps_an_explicit_pin() {
        let digest = Digest::of_bytes(b"virt-api");
        let yaml = format!(
            "name: t\nversion: 1\nk0s: {{ version: v1.36.3+k0s.0 }}\nstacks:\n  - name: kubevirt\n    version: v1.9.0\n    imageList: {{}}\n    images:\n      - {{ ref: 'quay.io/kubevirt/virt-api:v1.9.0', digest: '{digest}', source: {{ image: 'quay.io/kubevirt/virt-api:v1.9.0' }} }}\n"
        );
        let spec = parse(&yaml).unwrap();
        let pinned: Vec<&ImageSpec> = spec.stacks[0]
            .images
            .iter()
            .filter(|image| image.reference == "quay.io/kubevirt/virt-api:v1.9.0")
            .collect();
        assert_eq!(pinned.len(), 1);
        assert_eq!(pinned[0].digest, Some(digest));
    }

    #[test]
    fn image_list_needs_a_known_stack() {
        let yaml = "name: t\nversion: 1\nk0s: { version: v1.36.3+k0s.0 }\nstacks:\n  - name: storage\n    version: 1.0.0\n    imageList: {}\n";
        let error = parse(yaml).unwrap_err();
        assert!(
            error.contains("stack \"storage\" has no image list"),
            "{error}"
        );
    }

    #[test]
    fn spec_rejects_invalid_stack_name() {
        let error = parse(&GOOD.replace("name: example\n", "name: Example_Stack\n")).unwrap_err();
        assert!(error.contains("invalid stack name"), "{error}");
    }
}
