//! `spec.airlock`: the settings airlock adds to k0sctl's format. Every field is optional, and a
//! file without the section gets every stack with safe settings and only signed bundles.

use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;

use super::address::{HostAddress, dns_label_error};
use super::deserialize::closest;
use super::error::ConfigError;
use super::index::{Site, child, item};
use super::locate::Problems;
use super::raw::{RawAirlock, RawBundle, RawGpuOperator, RawStacks, RawTenant, RawTrustedKey};
use super::units::{Quantity, check_prometheus_duration};

/// The size limit for a public key file, which is two short lines.
const MAX_KEY_FILE_SIZE: u64 = 4096;

/// The data classification levels when the file declares none.
pub const DEFAULT_CLASSIFICATIONS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AirlockSettings {
    pub bundle: BundleSettings,
    pub stacks: Stacks,
    pub residency: Option<Residency>,
    /// Registries workloads may pull from besides the bundle's images. Empty means only what the
    /// bundle carries.
    pub allowed_registries: Vec<String>,
    /// The declared data classification levels, from least to most sensitive.
    pub data_classifications: Vec<String>,
    pub tenants: Vec<Tenant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleSettings {
    /// minisign public keys that may sign bundles for this cluster.
    pub trusted_keys: Vec<TrustedKey>,
    /// Whether an unsigned bundle is accepted.
    pub allow_unsigned: bool,
}

/// A minisign public key the cluster file trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedKey {
    /// The key file, when the key was given by path.
    pub path: Option<PathBuf>,
    /// The key in minisign's base64 form (`RW...`), checked to decode to an Ed25519 key.
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stacks {
    pub kubevirt: KubeVirt,
    pub gpu_operator: GpuOperator,
    pub observability: Observability,
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirt {
    pub enabled: bool,
    /// Software emulation for hosts without `/dev/kvm`, which is slow and meant for tests.
    pub use_emulation: bool,
    /// Hosts (by address or hostname) whose GPUs are passed through to virtual machines instead
    /// of serving containers.
    pub gpu_passthrough_hosts: Vec<String>,
}

/// On, off, or decided from the gathered host facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// On when any host has an NVIDIA GPU.
    Auto,
    On,
    Off,
}

/// The source of the NVIDIA kernel driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverSource {
    /// The host's driver when one is loaded, otherwise the operator's driver container.
    Auto,
    /// The driver installed on the host, with the operator's driver container off.
    Host,
    /// The operator's driver container, compiled on each node.
    Container,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigStrategy {
    Single,
    Mixed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuOperator {
    pub enabled: Toggle,
    pub driver: DriverSource,
    /// The driver container version, or `None` for the one the bundle pins.
    pub driver_version: Option<String>,
    pub mig: Mig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mig {
    pub enabled: bool,
    pub strategy: MigStrategy,
    /// The MIG profile that MIG-capable hosts get, such as `all-1g.10gb`.
    pub config: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observability {
    pub enabled: bool,
    /// How long metrics are kept, as a Prometheus duration such as `15d`.
    pub retention: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Violations are rejected at admission.
    Enforce,
    /// Violations are only reported.
    Audit,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub enabled: bool,
    pub mode: PolicyMode,
    /// Kyverno from the bundle, for rules that admission policies cannot express.
    pub kyverno: bool,
}

/// The declared location of the cluster and its data, for the blueprint and the policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Residency {
    /// ISO 3166-1 alpha-2 country code, or `EU`.
    pub jurisdiction: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub site: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A namespace with network policies and quotas.
    Namespace,
    /// Workloads run in KubeVirt virtual machines.
    Vm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// A DNS label, used as the namespace name.
    pub name: String,
    /// One of the declared data classifications.
    pub classification: String,
    pub isolation: Isolation,
    pub quota: Quota,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub gpu: Option<u32>,
    pub cpu: Option<Quantity>,
    pub memory: Option<Quantity>,
    pub storage: Option<Quantity>,
}

const ROOT: &str = "spec.airlock";

pub(super) fn build_airlock(
    raw: Option<RawAirlock>,
    problems: &mut Problems<'_>,
) -> Result<AirlockSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let data_classifications = classifications(raw.data_classifications, problems);
    Ok(AirlockSettings {
        bundle: bundle(raw.bundle.unwrap_or_default(), problems)?,
        stacks: stacks(raw.stacks.unwrap_or_default(), problems),
        residency: raw.residency.map(|residency| {
            let jurisdiction = residency.jurisdiction.filter(|j| !j.is_empty());
            if let Some(code) = &jurisdiction
                && !(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()))
            {
                problems.value(
                    &format!("{ROOT}.residency.jurisdiction"),
                    format!("invalid jurisdiction {code:?}"),
                    "use an ISO 3166-1 alpha-2 country code such as DE, or EU",
                );
            }
            Residency {
                jurisdiction,
                region: residency.region.filter(|r| !r.is_empty()),
                zone: residency.zone.filter(|z| !z.is_empty()),
                site: residency.site.filter(|s| !s.is_empty()),
            }
        }),
        allowed_registries: registries(raw.allowed_registries.unwrap_or_default(), problems),
        tenants: tenants(
            raw.tenants.unwrap_or_default(),
            &data_classifications,
            problems,
        ),
        data_classifications,
    })
}

fn bundle(raw: RawBundle, problems: &mut Problems<'_>) -> Result<BundleSettings, ConfigError> {
    let path = format!("{ROOT}.bundle.trustedKeys");
    let mut trusted_keys = Vec::new();
    for (index, key) in raw.trusted_keys.unwrap_or_default().into_iter().enumerate() {
        if let Some(key) = trusted_key(key, &item(&path, index), problems)? {
            trusted_keys.push(key);
        }
    }
    Ok(BundleSettings {
        trusted_keys,
        allow_unsigned: raw.allow_unsigned.unwrap_or(false),
    })
}

/// Reads one trusted key: inline (`key:`) or from a minisign `.pub` file (`path:`).
fn trusted_key(
    raw: RawTrustedKey,
    path: &str,
    problems: &mut Problems<'_>,
) -> Result<Option<TrustedKey>, ConfigError> {
    let (key_text, file) = match (
        raw.path.filter(|p| !p.is_empty()),
        raw.key.filter(|k| !k.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            problems.key(
                &child(path, "key"),
                "both path and key are set",
                "keep one of the two",
            );
            return Ok(None);
        }
        (None, None) => {
            problems.missing(
                path,
                "trusted key needs path or key",
                "set path to a minisign .pub file, or key to the key text starting with RW",
            );
            return Ok(None);
        }
        (None, Some(key)) => (key, None),
        (Some(written), None) => {
            let file = problems.locator.source.resolve_path(&written);
            let location = problems
                .location(&child(path, "path"), Site::Value)
                .unwrap_or_else(|| problems.locator.source.start());
            let text = match read_key_file(&file) {
                Ok(text) => text,
                Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                    problems.value(
                        &child(path, "path"),
                        format!("trusted key file {} not found", file.display()),
                        format!(
                            "relative paths resolve against the directory of {}",
                            problems.locator.source.name
                        ),
                    );
                    return Ok(None);
                }
                Err(source) => {
                    return Err(ConfigError::ReadKey {
                        path: file,
                        location,
                        source,
                    });
                }
            };
            (key_line(&text).to_string(), Some(file))
        }
    };

    let field = if file.is_some() {
        child(path, "path")
    } else {
        child(path, "key")
    };
    match minisign::PublicKey::from_base64(key_text.trim()) {
        Ok(_) => Ok(Some(TrustedKey {
            path: file,
            key: key_text.trim().to_string(),
        })),
        Err(_) => {
            problems.value(&field, "invalid minisign public key: expected 56 base64 characters encoding an Ed25519 key (starting with RW)", "copy the second line of the signer's .pub file");
            Ok(None)
        }
    }
}

fn read_key_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_KEY_FILE_SIZE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Returns the key line of a minisign `.pub` file, which follows an `untrusted comment:` line.
fn key_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("untrusted comment:"))
        .unwrap_or("")
}

fn stacks(raw: RawStacks, problems: &mut Problems<'_>) -> Stacks {
    let path = format!("{ROOT}.stacks");
    let kubevirt = raw.kubevirt.unwrap_or_default();
    let observability = raw.observability.unwrap_or_default();
    let policy = raw.policy.unwrap_or_default();

    let retention = observability
        .retention
        .map(|r| r.0)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "15d".to_string());
    if let Err(message) = check_prometheus_duration(&retention) {
        problems.value(
            &format!("{path}.observability.retention"),
            message,
            "write a duration such as 15d or 12h",
        );
    }
    let modes = [
        ("enforce", PolicyMode::Enforce),
        ("audit", PolicyMode::Audit),
    ];
    let mode = problems
        .choice(
            policy.mode.as_deref(),
            &modes,
            &format!("{path}.policy.mode"),
            "policy mode",
        )
        .unwrap_or(PolicyMode::Enforce);
    Stacks {
        kubevirt: KubeVirt {
            enabled: kubevirt.enabled.unwrap_or(true),
            use_emulation: kubevirt.use_emulation.unwrap_or(false),
            gpu_passthrough_hosts: kubevirt.gpu_passthrough_hosts.unwrap_or_default(),
        },
        gpu_operator: gpu_operator(
            raw.gpu_operator.unwrap_or_default(),
            &format!("{path}.gpuOperator"),
            problems,
        ),
        observability: Observability {
            enabled: observability.enabled.unwrap_or(true),
            retention,
        },
        policy: Policy {
            enabled: policy.enabled.unwrap_or(true),
            mode,
            kyverno: policy.kyverno.unwrap_or(false),
        },
    }
}

fn gpu_operator(raw: RawGpuOperator, path: &str, problems: &mut Problems<'_>) -> GpuOperator {
    let toggles = [
        ("auto", Toggle::Auto),
        ("true", Toggle::On),
        ("false", Toggle::Off),
    ];
    let enabled = problems
        .choice(
            raw.enabled.as_ref().map(|e| e.0.as_str()),
            &toggles,
            &child(path, "enabled"),
            "enabled value",
        )
        .unwrap_or(Toggle::Auto);
    let sources = [
        ("auto", DriverSource::Auto),
        ("host", DriverSource::Host),
        ("container", DriverSource::Container),
    ];
    let driver = problems
        .choice(
            raw.driver.as_deref(),
            &sources,
            &child(path, "driver"),
            "driver",
        )
        .unwrap_or(DriverSource::Auto);
    let mig = raw.mig.unwrap_or_default();
    let strategies = [
        ("single", MigStrategy::Single),
        ("mixed", MigStrategy::Mixed),
    ];
    let strategy = problems
        .choice(
            mig.strategy.as_deref(),
            &strategies,
            &child(path, "mig.strategy"),
            "MIG strategy",
        )
        .unwrap_or(MigStrategy::Single);
    GpuOperator {
        enabled,
        driver,
        driver_version: raw.driver_version.map(|v| v.0).filter(|v| !v.is_empty()),
        mig: Mig {
            enabled: mig.enabled.unwrap_or(false),
            strategy,
            config: mig
                .config
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "all-disabled".to_string()),
        },
    }
}

fn registries(raw: Vec<String>, problems: &mut Problems<'_>) -> Vec<String> {
    let path = format!("{ROOT}.allowedRegistries");
    for (index, registry) in raw.iter().enumerate() {
        // A registry is `host[:port]`, optionally followed by a repository prefix.
        let host_and_port = registry.split('/').next().unwrap_or_default();
        let host = match host_and_port.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => host_and_port,
        };
        if let Err(error) = HostAddress::parse(host) {
            problems.value(
                &item(&path, index),
                format!("invalid registry {registry:?}: {}", error.reason),
                "write a registry as host[:port], such as registry.local:5000",
            );
        }
    }
    raw
}

fn classifications(raw: Option<Vec<String>>, problems: &mut Problems<'_>) -> Vec<String> {
    let path = format!("{ROOT}.dataClassifications");
    let Some(levels) = raw else {
        return DEFAULT_CLASSIFICATIONS
            .iter()
            .map(|level| level.to_string())
            .collect();
    };
    if levels.is_empty() {
        problems.value(&path, "dataClassifications is empty", "declare at least one level, or remove the field to use public, internal, confidential, restricted");
    }
    for (index, level) in levels.iter().enumerate() {
        if let Some(reason) = dns_label_error(level) {
            problems.value(
                &item(&path, index),
                format!("invalid classification {level:?}: {reason}"),
                "classifications become label values; use lower-case words such as confidential",
            );
        } else if levels[..index].contains(level) {
            problems.value(
                &item(&path, index),
                format!("duplicate classification {level:?}"),
                "declare each level once",
            );
        }
    }
    levels
}

fn tenants(
    raw: Vec<RawTenant>,
    classifications: &[String],
    problems: &mut Problems<'_>,
) -> Vec<Tenant> {
    let path = format!("{ROOT}.tenants");
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut names: Vec<(String, usize)> = Vec::new();
    for (index, raw) in raw.into_iter().enumerate() {
        let at = |field: &str| child(&item(&path, index), field);
        let name = raw.name.unwrap_or_default();
        let mut valid = true;
        if name.is_empty() {
            problems.missing(
                &item(&path, index),
                "tenant has no name",
                "set name to a DNS label such as research",
            );
            valid = false;
        } else if let Some(reason) = dns_label_error(&name) {
            problems.value(
                &at("name"),
                format!("invalid tenant name {name:?}: {reason}"),
                "tenant names become namespace names; use a DNS label such as research",
            );
            valid = false;
        } else if let Some(&(_, first)) = names.iter().find(|(known, _)| *known == name) {
            let first_at = problems
                .location(&child(&item(&path, first), "name"), Site::Value)
                .map(|l| format!(" (first declared at {l})"))
                .unwrap_or_default();
            problems.value(
                &at("name"),
                format!("duplicate tenant name {name:?}{first_at}"),
                "give each tenant its own name",
            );
            valid = false;
        } else {
            names.push((name.clone(), index));
        }

        // Without a classification the tenant gets the most sensitive declared level.
        let classification = raw
            .classification
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| classifications.last().cloned().unwrap_or_default());
        if !classifications.contains(&classification) {
            let fix = match closest(&classification, classifications) {
                Some(suggestion) => format!(
                    "did you mean \"{suggestion}\"? The declared levels are: {}",
                    classifications.join(", ")
                ),
                None => format!(
                    "expected one of the declared levels: {}",
                    classifications.join(", ")
                ),
            };
            problems.value(
                &at("classification"),
                format!("unknown classification {classification:?}"),
                fix,
            );
            valid = false;
        }

        let isolations = [("namespace", Isolation::Namespace), ("vm", Isolation::Vm)];
        let isolation = problems.choice(
            raw.isolation.as_deref(),
            &isolations,
            &at("isolation"),
            "isolation",
        );
        valid &= isolation.is_some();
        let isolation = isolation.unwrap_or(Isolation::Namespace);

        let raw_quota = raw.quota.unwrap_or_default();
        let mut quantity = |field: &str, written: Option<super::raw::ScalarText>| {
            let text = written.map(|w| w.0).filter(|w| !w.is_empty())?;
            Quantity::parse(&text)
                .map_err(|message| {
                    problems.value(
                        &at(&format!("quota.{field}")),
                        message,
                        "write a Kubernetes quantity such as 64, 500m or 256Gi",
                    );
                    valid = false;
                })
                .ok()
        };
        let quota = Quota {
            gpu: raw_quota.gpu,
            cpu: quantity("cpu", raw_quota.cpu),
            memory: quantity("memory", raw_quota.memory),
            storage: quantity("storage", raw_quota.storage),
        };

        if valid {
            tenants.push(Tenant {
                name,
                classification,
                isolation,
                quota,
            });
        }
    }
    tenants
}
