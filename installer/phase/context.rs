//! The state one run of `apply` or `upgrade` carries from phase to phase.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::facts::Facts;
use super::plan::PlannedFile;
use crate::blueprint::SigningKey;
use crate::blueprint::audit::{AuditTrail, Draft, RESULT_OK, RunIdentity};
use crate::blueprint::record::FileModeRecord;
use crate::bundle::{Bundle, TrustPolicy, VerifiedBundle};
use crate::config::{Cluster, Host as HostSpec};
use crate::digest::Digest;
use crate::remote::{ConnectOptions, Host, HostLock, LockOwner};
use crate::stacks::{Rendered, Stack};
use crate::ui::Ui;

/// The kind of run: an install (or its completion), or an upgrade to a newer bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    Apply,
    Upgrade {
        /// Accept a bundle whose version is not newer than the installed one.
        allow_downgrade: bool,
    },
    /// `airlock reset`: stop and remove k0s on every host.
    Reset,
    /// `airlock backup`: save the cluster state from the leader.
    Backup,
}

/// The settings of a run that come from the command line.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub mode: RunMode,
    pub dry_run: bool,
    /// The maximum number of hosts worked on at once.
    pub concurrency: usize,
    pub known_hosts: PathBuf,
    pub accept_new_host_keys: bool,
    /// The directory that receives the blueprint.
    pub out_dir: PathBuf,
    pub connect: ConnectOptions,
    /// How long to wait for the API server or a node to become ready.
    pub ready_timeout: Duration,
    /// A limit for every stack readiness check, in place of each stack's own.
    pub stack_timeout: Option<Duration>,
    /// The key that signs the blueprint and the audit log head, from `--sign-blueprint`.
    pub blueprint_key: Option<SigningKey>,
    /// A `k0s backup` archive that the leader restores before it starts, from `--restore-from`.
    pub restore_from: Option<PathBuf>,
    /// Whether nodes of the cluster that the cluster file no longer lists are removed.
    pub prune: bool,
}

/// One host of the cluster file and what this run learned and did there.
pub struct Node {
    pub spec: HostSpec,
    pub connection: Option<Arc<Host>>,
    pub lock: Option<HostLock>,
    pub facts: Facts,
    /// The files this host needs, with whether it holds them already; decided in preflight.
    pub uploads: Vec<PlannedFile>,
    /// The uploads of this host's `files[]` entries, with their origin, for the blueprint.
    pub cluster_file_uploads: Vec<crate::blueprint::record::HostFileRecord>,
    /// Files this host holds from the bundle or from airlock, by path, with their digests.
    pub placed: BTreeMap<String, Digest>,
    /// The mode and owner of each upload in `placed`, by path.
    pub placed_modes: BTreeMap<String, FileModeRecord>,
    /// Whether this run installed k0s here; a host that never became ready is reset on failure.
    pub installed_by_this_run: bool,
    /// Shell commands run when the run lets go of the host, with the lock release, in one round
    /// trip: such as overwriting a used join token once every join of the run is done.
    pub on_release: Vec<String>,
    /// Whether k0s here reached readiness in this run (the API server, or the node Ready).
    pub became_ready: bool,
}

impl Node {
    /// The host as messages name it: `address` or `address:port`.
    pub fn label(&self) -> String {
        self.spec.to_string()
    }

    /// The connection; phases after "Connect to hosts" may rely on it.
    pub fn host(&self) -> Arc<Host> {
        self.connection
            .clone()
            .expect("phases after connecting run only on connected hosts")
    }

    /// The Kubernetes node name: the hostname override, else the host's own hostname.
    pub fn node_name(&self) -> String {
        self.spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.facts.hostname.clone())
    }

    /// Whether k0s runs on the host now.
    pub fn k0s_running(&self) -> bool {
        self.facts.k0s_status.is_some()
    }

    /// The k0s binary and data directory of this host.
    pub fn k0s_paths(&self) -> super::k0s_ops::K0sPaths<'_> {
        super::k0s_ops::K0sPaths {
            binary: &self.spec.k0s_install_path,
            data_dir: &self.spec.data_dir,
        }
    }

    /// Whether a k0s service is installed but does not run: a join that stopped part-way.
    pub fn half_installed(&self) -> bool {
        self.facts.k0s_service.is_some() && !self.k0s_running()
    }
}

/// Everything a run carries between phases.
pub struct Run {
    pub cluster: Cluster,
    /// The bundle to verify and install from; `None` for commands that install nothing (reset,
    /// backup).
    pub bundle_source: Option<Bundle>,
    pub trust: TrustPolicy,
    bundle: Option<Arc<VerifiedBundle>>,
    pub nodes: Vec<Node>,
    pub settings: RunSettings,
    pub ui: Ui,
    pub owner: LockOwner,
    /// The index in `nodes` of the controller that initializes the cluster and creates tokens.
    pub leader: usize,
    /// Events of this run for the blueprint, in order.
    pub record: Vec<RecordedAction>,
    /// The audit log that [`Run::record`] appends to.
    pub audit: AuditTrail,
    /// The stacks rendered for this cluster; set by the phase that renders them.
    pub stacks: Option<Rendered>,
    /// Per stack, what its readiness checks last saw; set by the phase that installs the stacks.
    pub stack_status: BTreeMap<Stack, StackOutcome>,
    /// The blueprint stored on the controllers, which upgrade reads to learn what runs.
    pub installed: Option<crate::blueprint::Blueprint>,
    /// Nodes that the stored blueprint records and the cluster file no longer lists, kept in
    /// the new blueprint because they still run (no `--prune`).
    pub unlisted: Vec<crate::blueprint::record::NodeRecord>,
}

/// The outcome of a stack's readiness checks.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StackOutcome {
    pub ready: bool,
    /// The last state seen, for example the missing image of a Deployment that is not ready.
    pub detail: String,
}

/// One action taken on a host.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedAction {
    pub phase: &'static str,
    pub host: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl Run {
    pub fn new(
        cluster: Cluster,
        bundle_source: Option<Bundle>,
        trust: TrustPolicy,
        settings: RunSettings,
        ui: Ui,
        purpose: &str,
    ) -> Run {
        let leader = cluster
            .leader()
            .map(|leader| leader.index)
            .and_then(|index| cluster.hosts.iter().position(|host| host.index == index))
            .unwrap_or(0);
        let nodes = cluster
            .hosts
            .iter()
            .map(|spec| Node {
                spec: spec.clone(),
                connection: None,
                lock: None,
                facts: Facts::default(),
                uploads: Vec::new(),
                cluster_file_uploads: Vec::new(),
                placed: BTreeMap::new(),
                placed_modes: BTreeMap::new(),
                installed_by_this_run: false,
                on_release: Vec::new(),
                became_ready: false,
            })
            .collect();
        Run {
            cluster,
            bundle_source,
            trust,
            bundle: None,
            nodes,
            settings,
            ui,
            owner: LockOwner::this_process(purpose),
            leader,
            record: Vec::new(),
            audit: AuditTrail::new(RunIdentity::this_process(purpose)),
            stacks: None,
            stack_status: BTreeMap::new(),
            installed: None,
            unlisted: Vec::new(),
        }
    }

    /// The verified bundle; phases after "Verify the bundle" may rely on it.
    pub fn bundle(&self) -> &VerifiedBundle {
        self.bundle
            .as_ref()
            .expect("phases after verification run only with a verified bundle")
    }

    /// The verified bundle, shared with tasks that outlive a borrow of the run (archive writers).
    pub fn shared_bundle(&self) -> Arc<VerifiedBundle> {
        self.bundle
            .clone()
            .expect("phases after verification run only with a verified bundle")
    }

    pub fn set_bundle(&mut self, bundle: VerifiedBundle) {
        self.bundle = Some(Arc::new(bundle));
    }

    pub fn leader(&self) -> &Node {
        &self.nodes[self.leader]
    }

    /// Indexes of the controllers other than the leader, in file order, without those marked
    /// `reset: true`.
    pub fn other_controllers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| {
                let spec = &self.nodes[index].spec;
                index != self.leader && spec.role.is_controller() && !spec.reset
            })
            .collect()
    }

    /// Indexes of the plain workers, in file order, without those marked `reset: true`.
    pub fn workers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| {
                let spec = &self.nodes[index].spec;
                !spec.role.is_controller() && !spec.reset
            })
            .collect()
    }

    /// Indexes of the hosts marked `reset: true`, in file order.
    pub fn marked_for_reset(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| self.nodes[index].spec.reset)
            .collect()
    }

    /// Returns the digest that a new audit log's hash chain starts from: the bundle's, or for
    /// commands without a bundle, the digest of the cluster name.
    pub fn audit_genesis(&self) -> Digest {
        match &self.bundle {
            Some(bundle) => bundle.digest(),
            None => Digest::of_bytes(self.cluster.name.as_bytes()),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// Whether this run upgrades a running cluster.
    pub fn upgrading(&self) -> bool {
        matches!(self.settings.mode, RunMode::Upgrade { .. })
    }

    /// Records an action in the audit log and for the blueprint, and logs it.
    pub fn record(
        &mut self,
        phase: &'static str,
        host: &str,
        action: impl Into<String>,
        digest: Option<Digest>,
    ) {
        let action = action.into();
        tracing::debug!(phase, host, %action, "done");
        self.audit.record(Draft {
            time: crate::blueprint::now_rfc3339(),
            phase: phase.to_string(),
            host: host.to_string(),
            action: action.clone(),
            digest,
            result: RESULT_OK.to_string(),
        });
        self.record.push(RecordedAction {
            phase,
            host: host.to_string(),
            action,
            digest,
        });
    }
}
