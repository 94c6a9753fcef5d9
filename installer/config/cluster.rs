//! The loaded cluster: every file read, every document sorted, the cluster document checked and
//! defaulted, and the k0s configuration merged.

use std::path::{Path, PathBuf};

use serde::Serialize;
use yaml_serde::Value;

use super::airlock::{AirlockSettings, build_airlock};
use super::deserialize::deserialize_all;
use super::documents::{
    DocumentKind, K0SCTL_API_VERSION, Manifest, ParsedFile, classify, deep_merge, manifest,
};
use super::error::{ConfigError, Problem};
use super::host::{Host, Role, build_hosts};
use super::locate::{Locator, Problems};
use super::options::{Options, build_options};
use super::raw::{RawCluster, RawK0s};
use super::source::Source;
use crate::k0s::K0sVersion;

/// The oldest k0s k0sctl supports.
const K0S_MIN_VERSION: &str = "0.11.0-rc1";
/// The first k0s with dynamic configuration.
const K0S_DYNAMIC_CONFIG_SINCE: &str = "1.22.2+k0s.2";
/// The first k0s that accepts `--kubelet-root-dir`.
const K0S_KUBELET_ROOT_DIR_SINCE: &str = "1.32.1-rc.0";

/// A cluster file set, loaded, defaulted and validated.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `metadata.name`: the cluster and context name in the admin kubeconfig.
    pub name: String,
    /// `metadata.user`: the user name in the admin kubeconfig.
    pub user: String,
    pub hosts: Vec<Host>,
    pub k0s: K0s,
    pub options: Options,
    pub airlock: AirlockSettings,
    /// Other documents of the files, in file order, to apply after the cluster is up.
    pub manifests: Vec<Manifest>,
    /// The files loaded, as named in messages.
    pub files: Vec<String>,
}

/// The release channel k0sctl picks from when no version is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionChannel {
    Stable,
    /// Includes pre-releases.
    Latest,
}

/// `spec.k0s`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K0s {
    /// The requested k0s version, or `None` to take the bundle's.
    pub version: Option<K0sVersion>,
    pub version_channel: VersionChannel,
    /// Whether k0s keeps its cluster configuration in the API after the first controller. It is
    /// forced on when a controller has `--enable-dynamic-config` in its installFlags.
    pub dynamic_config: bool,
    /// `spec.k0s.config` with every k0s `ClusterConfig` document merged in, in file order, or
    /// `None` when neither is given.
    pub config: Option<Value>,
}

impl Cluster {
    /// Loads cluster files (`-` reads standard input) with variables from the process
    /// environment.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Cluster, ConfigError> {
        ClusterLoader::new().load(paths)
    }

    /// Returns the initial controller, which creates join tokens for the others: the first controller
    /// not marked for reset. Always `Some` for a loaded cluster.
    pub fn leader(&self) -> Option<&Host> {
        self.controllers().find(|host| !host.reset)
    }

    /// Returns the hosts running the control plane (controller, controller+worker, single).
    pub fn controllers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|host| host.role.is_controller())
    }

    /// Returns the hosts with the plain worker role.
    pub fn workers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|host| host.role == Role::Worker)
    }

    /// Returns the hosts that run workloads (worker, controller+worker, single).
    pub fn workload_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|host| host.role.runs_workloads())
    }
}

/// A cluster file given as text, for callers that do not read from disk.
#[derive(Clone, Debug)]
pub struct SourceText {
    /// The file name used in messages.
    pub name: String,
    pub text: String,
    /// The directory relative paths resolve against.
    pub dir: PathBuf,
}

/// Looks up an environment variable by name.
type EnvLookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Loads cluster files with a chosen source of environment variables.
pub struct ClusterLoader<'a> {
    env: EnvLookup<'a>,
}

impl Default for ClusterLoader<'_> {
    fn default() -> Self {
        ClusterLoader::new()
    }
}

impl<'a> ClusterLoader<'a> {
    /// Creates a loader that reads variables from the process environment.
    pub fn new() -> ClusterLoader<'a> {
        ClusterLoader {
            env: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Creates a loader that looks variables up with `env`.
    pub fn with_env(env: impl Fn(&str) -> Option<String> + 'a) -> ClusterLoader<'a> {
        ClusterLoader { env: Box::new(env) }
    }

    /// Reads and loads cluster files, where `-` reads standard input.
    pub fn load<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Cluster, ConfigError> {
        let mut texts = Vec::with_capacity(paths.len());
        for path in paths {
            let (name, text, dir) = Source::read(path.as_ref())?;
            texts.push(SourceText { name, text, dir });
        }
        self.load_texts(texts)
    }

    /// Loads cluster files given as text.
    pub fn load_texts(&self, texts: Vec<SourceText>) -> Result<Cluster, ConfigError> {
        if texts.is_empty() {
            return Err(ConfigError::NoFiles);
        }
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for SourceText { name, text, dir } in texts {
            match Source::new(name, text, dir, &*self.env).and_then(ParsedFile::parse) {
                Ok(file) => files.push(file),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let cluster = assemble(&files, &mut problems)?;
        match cluster {
            Some(cluster) if problems.is_empty() => Ok(cluster),
            _ => {
                sort_by_position(&mut problems, &files);
                Err(ConfigError::Invalid(problems))
            }
        }
    }
}

/// Orders problems as they appear in the files, in the order the files were given. Problems
/// without a position come first.
fn sort_by_position(problems: &mut [Problem], files: &[ParsedFile]) {
    problems.sort_by_key(|problem| {
        problem.location.as_ref().map(|location| {
            let file = files
                .iter()
                .position(|file| file.source.name == location.file);
            (file, location.line, location.column)
        })
    });
}

/// Sorts the documents of all files and builds the cluster from them.
fn assemble(
    files: &[ParsedFile],
    problems: &mut Vec<Problem>,
) -> Result<Option<Cluster>, ConfigError> {
    let file_names: Vec<String> = files.iter().map(|file| file.source.name.clone()).collect();
    let mut clusters = Vec::new();
    let mut k0s_configs = Vec::new();
    let mut manifests = Vec::new();

    for file in files {
        for document in &file.documents {
            let locator = Locator::new(&file.source, document.scanned.as_ref());
            match classify(document, &locator) {
                Ok(DocumentKind::Cluster) => clusters.push((locator, document)),
                Ok(DocumentKind::K0sConfig) => k0s_configs.push(document.value.clone()),
                Ok(DocumentKind::Manifest { api_version, kind }) => {
                    manifests.push(manifest(document, &locator, api_version, kind));
                }
                Err(problem) => problems.push(problem),
            }
        }
    }

    let total_documents: usize = files.iter().map(|file| file.documents.len()).sum();
    if total_documents == 0 {
        problems.push(
            Problem::new(
                format!("no YAML documents found in {}", file_names.join(", ")),
                None,
            )
            .with_fix(format!(
                "write a document with apiVersion: {K0SCTL_API_VERSION} and kind: Cluster"
            )),
        );
        return Ok(None);
    }
    let (locator, document) = match clusters.as_slice() {
        [single] => *single,
        [] => {
            // A kind: ClusterConfig document under the k0sctl apiVersion is already reported.
            if problems.is_empty() {
                problems.push(
                    Problem::new("expected exactly one cluster config, got 0", None).with_fix(
                        format!(
                            "add a document with apiVersion: {K0SCTL_API_VERSION} and kind: Cluster"
                        ),
                    ),
                );
            }
            return Ok(None);
        }
        several => {
            for (locator, _) in several {
                problems.push(
                    Problem::new(
                        format!("expected exactly one cluster config, got {}", several.len()),
                        Some(locator.document_start()),
                    )
                    .with_fix("keep one Cluster document and move its hosts into it"),
                );
            }
            return Ok(None);
        }
    };

    let mut with_unknown_fields = Vec::new();
    let value = document.value.clone();
    let raw = deserialize_all::<RawCluster>(value, &locator, problems, &mut with_unknown_fields);
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut problems = Problems {
        locator,
        list: problems,
        with_unknown_fields,
    };
    let spec = raw.spec.unwrap_or_default();
    let metadata = raw.metadata.unwrap_or_default();
    let hosts = build_hosts(spec.hosts, &mut problems);
    let k0s = build_k0s(
        spec.k0s.unwrap_or_default(),
        &hosts,
        k0s_configs,
        &mut problems,
    );
    let options = build_options(spec.options, &mut problems);
    let airlock = build_airlock(spec.airlock, &mut problems)?;

    Ok(Some(Cluster {
        name: metadata
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "k0s-cluster".to_string()),
        user: metadata
            .user
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "admin".to_string()),
        hosts,
        k0s,
        options,
        airlock,
        manifests,
        files: file_names,
    }))
}

fn build_k0s(
    raw: RawK0s,
    hosts: &[Host],
    k0s_configs: Vec<Value>,
    problems: &mut Problems<'_>,
) -> K0s {
    let minimum = |text: &str| text.parse::<K0sVersion>().expect("version constants parse");
    let version = raw
        .version
        .map(|v| v.0)
        .filter(|v| !v.is_empty())
        .and_then(|text| match text.parse::<K0sVersion>() {
            Ok(version) => Some(version),
            Err(error) => {
                problems.value(
                    "spec.k0s.version",
                    error.to_string(),
                    "write the version of a k0s release, or remove it to use the bundle's version",
                );
                None
            }
        });
    if let Some(version) = &version {
        if *version < minimum(K0S_MIN_VERSION) {
            problems.value(
                "spec.k0s.version",
                format!(
                    "k0s {version} is too old: the minimum supported version is {K0S_MIN_VERSION}"
                ),
                "use a newer k0s release",
            );
        } else if hosts.iter().any(|host| host.kubelet_root_dir.is_some())
            && *version < minimum(K0S_KUBELET_ROOT_DIR_SINCE)
        {
            problems.value(
                "spec.k0s.version",
                format!("k0s {version} does not support --kubelet-root-dir, which airlock sets to /var/lib/kubelet on hosts that run workloads so that KubeVirt and CSI drivers find the kubelet"),
                "use k0s v1.32.1 or newer",
            );
        }
    }

    let channels = [
        ("stable", VersionChannel::Stable),
        ("latest", VersionChannel::Latest),
    ];
    let version_channel = problems
        .choice(
            raw.version_channel.as_deref(),
            &channels,
            "spec.k0s.versionChannel",
            "versionChannel",
        )
        .unwrap_or(VersionChannel::Stable);

    let flagged = hosts.iter().any(|host| {
        host.role.is_controller() && host.install_flags.contains("--enable-dynamic-config")
    });
    let dynamic_config = raw.dynamic_config.unwrap_or(false) || flagged;
    if dynamic_config
        && let Some(version) = &version
        && *version < minimum(K0S_DYNAMIC_CONFIG_SINCE)
    {
        let site = if raw.dynamic_config == Some(true) {
            "spec.k0s.dynamicConfig"
        } else {
            "spec.k0s.version"
        };
        problems.value(site, format!("dynamic config needs k0s {K0S_DYNAMIC_CONFIG_SINCE} or newer, but the version is {version}"), "use a newer k0s release, or turn dynamic config off");
    }

    let mut config = match raw.config {
        Some(Value::Null) | None => None,
        Some(config @ Value::Mapping(_)) => Some(config),
        Some(_) => {
            problems.value(
                "spec.k0s.config",
                "spec.k0s.config is not a mapping",
                "write the k0s ClusterConfig as a mapping, with apiVersion, kind and spec",
            );
            None
        }
    };
    for document in k0s_configs {
        tracing::debug!("merging a k0s ClusterConfig document into spec.k0s.config");
        match &mut config {
            Some(config) => deep_merge(config, document),
            None => config = Some(document),
        }
    }
    K0s {
        version,
        version_channel,
        dynamic_config,
        config,
    }
}
