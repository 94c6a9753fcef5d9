//! The cluster file: k0sctl's `Cluster` format plus airlock's own section, `spec.airlock`.
//!
//! Users bring the `k0sctl.yaml` they have. Loading follows k0sctl v0.32: each file passes
//! through `${VAR}` substitution and is split into YAML documents. The documents are sorted by
//! `apiVersion` and `kind` into the one cluster document, k0s `ClusterConfig` documents (merged
//! into `spec.k0s.config`) and other manifests (applied after the cluster is up). The cluster
//! document is then defaulted and validated into a [`Cluster`].
//!
//! Every problem found is reported at once, each with the file, line and column as the user
//! wrote them and what to change.
//!
//! ```no_run
//! let cluster = airlock::config::Cluster::load(&["cluster.yaml"])?;
//! let leader = cluster.leader().expect("a loaded cluster has a controller");
//! let command = cluster.install_command(leader, airlock::config::InstallOptions { leader: true, force: false })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod address;
mod airlock;
mod cluster;
mod deserialize;
mod documents;
mod envsubst;
mod error;
mod files;
mod flags;
mod host;
mod index;
mod install;
mod locate;
mod options;
mod raw;
mod source;
mod ssh;
mod units;

pub use crate::k0s::K0sVersion;
pub use address::{HostAddress, InvalidHostAddress};
pub use airlock::{
    AirlockSettings, BundleSettings, DriverSource, GpuOperator, Isolation, KubeVirt, Mig,
    MigStrategy, Observability, Policy, PolicyMode, Quota, Residency, Stacks, Tenant, Toggle,
    TrustedKey,
};
pub use cluster::{Cluster, ClusterLoader, K0s, SourceText, VersionChannel};
pub use deserialize::closest;
pub use documents::{Manifest, deep_merge};
pub use error::{ConfigError, Location, Problem};
pub use files::{FileSource, UploadFile};
pub use flags::Flags;
pub use host::{
    DEFAULT_DATA_DIR, DEFAULT_K0S_INSTALL_PATH, DEFAULT_KUBELET_ROOT_DIR, Hooks, Host, Role,
};
pub use install::{CONFIG_FILE, InstallCommandError, InstallOptions, TOKEN_FILE};
pub use options::{Concurrency, Drain, EvictTaint, Options, TaintEffect};
pub use ssh::Ssh;
pub use units::Quantity;

/// A commented example cluster file, printed by `airlock init`.
pub const EXAMPLE_CLUSTER_FILE: &str = include_str!("example-cluster.yaml");
