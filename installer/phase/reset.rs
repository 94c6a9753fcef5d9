//! Phases that take k0s off hosts: "Reset hosts" for `airlock reset`, "Reset marked hosts" for
//! hosts with `reset: true` during `apply`, and "Remove nodes no longer listed" for
//! `apply --prune`.
//!
//! A reset stops k0s, runs `k0s reset` (which deletes the data directory and the service), then
//! removes what airlock placed outside it: the k0s binary, `/etc/k0s/k0s.yaml`, the join token
//! file, and every file the stored blueprint records for the node. During `apply`, a host first
//! leaves the cluster as k0sctl has it leave: drained and deleted on the leader, and for a
//! controller, `k0s etcd leave` while it still runs.

use std::sync::Arc;

use async_trait::async_trait;

use super::context::{Node, Run};
use super::k0s_ops::K0sPaths;
use super::plan::airlock_dir;
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::blueprint::Blueprint;
use crate::blueprint::record::{FILE_NAME, NodeRecord};
use crate::config::{
    CONFIG_FILE, DEFAULT_KUBELET_ROOT_DIR, Host as HostSpec, HostAddress, TOKEN_FILE,
};
use crate::remote::{Host, HostKeyPolicy, JumpHosts, KnownHosts, Session, UserSshConfig};
use crate::shell::quote;

/// The directory of the k0s configuration and token; removed once empty.
const K0S_CONFIG_DIR: &str = "/etc/k0s";

/// Reads the newest blueprint stored on the controllers that `select` picks. Returns `None` when
/// no controller stores one, as in a cluster that never finished an apply.
pub async fn newest_blueprint(
    run: &Run,
    select: impl Fn(&Node) -> bool,
) -> Result<Option<Blueprint>, PhaseError> {
    let mut newest: Option<Blueprint> = None;
    for node in run
        .nodes
        .iter()
        .filter(|node| node.spec.role.is_controller() && node.connection.is_some() && select(node))
    {
        let path = format!("{}/{FILE_NAME}", airlock_dir(&node.spec.data_dir));
        let Some(bytes) = node.host().read_file(&path).await? else {
            continue;
        };
        let blueprint = Blueprint::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| PhaseError::new(anyhow::anyhow!("{}: {path}: {e}", node.label())))?;
        if newest
            .as_ref()
            .is_none_or(|known| blueprint.written_at > known.written_at)
        {
            newest = Some(blueprint);
        }
    }
    Ok(newest)
}

/// Lists the files a blueprint records for the node at `label` (address or address:port): bundle
/// files and files rendered for the host.
fn recorded_files(blueprint: Option<&Blueprint>, label: &str) -> Vec<String> {
    blueprint
        .into_iter()
        .flat_map(|blueprint| &blueprint.nodes)
        .filter(|record| record.label() == label)
        .flat_map(node_files)
        .collect()
}

fn node_files(record: &NodeRecord) -> Vec<String> {
    record
        .files
        .keys()
        .cloned()
        .chain(record.host_files.iter().map(|file| file.path.clone()))
        .collect()
}

/// The k0s installation and airlock files a reset removes from one host.
#[derive(Clone, Debug)]
pub struct ResetTarget {
    pub binary: String,
    pub data_dir: String,
    /// `k0s reset` with the host's data and kubelet root directories.
    pub reset_command: String,
    /// Files airlock placed, from the blueprint; those under the data directory go with it.
    pub files: Vec<String>,
}

impl ResetTarget {
    pub fn new(spec: &HostSpec, files: Vec<String>) -> ResetTarget {
        ResetTarget {
            binary: spec.k0s_install_path.clone(),
            data_dir: spec.data_dir.clone(),
            reset_command: spec.reset_command(),
            files,
        }
    }

    /// Lists the paths removed after `k0s reset`, sorted and without duplicates.
    pub fn removed_paths(&self) -> Vec<String> {
        let mut paths = vec![
            self.binary.clone(),
            CONFIG_FILE.to_string(),
            TOKEN_FILE.to_string(),
        ];
        paths.extend(self.files.iter().cloned());
        paths.sort();
        paths.dedup();
        paths
    }

    /// Builds the script that stops and resets k0s, removes airlock's files and has systemd
    /// forget the removed unit, as k0sctl does. `k0s reset` runs only where the binary exists,
    /// because a host where no install began has nothing to reset.
    pub fn script(&self) -> String {
        let binary = quote(&self.binary);
        let files: Vec<String> = self.removed_paths().iter().map(|p| quote(p)).collect();
        let mut dirs: Vec<String> = self
            .removed_paths()
            .iter()
            .filter_map(|path| path.rsplit_once('/').map(|(dir, _)| dir.to_string()))
            .filter(|dir| dir.starts_with(K0S_CONFIG_DIR))
            .collect();
        dirs.push(K0S_CONFIG_DIR.to_string());
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.len()));
        dirs.dedup();
        let dirs: Vec<String> = dirs.iter().map(|dir| quote(dir)).collect();
        format!(
            "set -e\n\
             if [ -x {binary} ]; then\n  {binary} stop >/dev/null 2>&1 || true\n  {reset}\nfi\n\
             rm -f -- {files}\n\
             rm -rf -- {airlock}\n\
             for d in {dirs}; do rmdir -- \"$d\" 2>/dev/null || true; done\n\
             if command -v systemctl >/dev/null; then systemctl daemon-reload 2>/dev/null || true; fi",
            reset = self.reset_command,
            files = files.join(" "),
            airlock = quote(&airlock_dir(&self.data_dir)),
            dirs = dirs.join(" "),
        )
    }
}

/// Stops and resets k0s on `host` and removes airlock's files.
pub async fn reset_host(host: &Host, target: &ResetTarget) -> anyhow::Result<()> {
    tracing::debug!(host = %host.label(), "resetting k0s");
    host.run(&target.script()).await.map_err(|error| {
        anyhow::Error::new(error).context(format!("`{}` failed", target.reset_command))
    })?;
    Ok(())
}

/// Drains the node `name` (when it runs workloads) and deletes it, asking the API server on
/// `leader`. A node the API server does not know is left alone.
async fn remove_node(
    run: &Run,
    leader: &Host,
    paths: K0sPaths<'_>,
    name: &str,
    drain: bool,
) -> anyhow::Result<bool> {
    let quoted = quote(name);
    let known = leader
        .run_output(&paths.kubectl(&format!("get node {quoted} -o name")))
        .await?
        .success();
    if !known {
        return Ok(false);
    }
    let options = &run.cluster.options.drain;
    if drain && options.enabled {
        let args = options.kubectl_args().join(" ");
        leader
            .run(&paths.kubectl(&format!("drain {args} {quoted}")))
            .await
            .map_err(|error| {
                anyhow::Error::new(error).context(format!(
                    "draining node {name} did not finish; a PodDisruptionBudget may forbid evicting a pod"
                ))
            })?;
    }
    leader
        .run(&paths.kubectl(&format!("delete node {quoted}")))
        .await?;
    Ok(true)
}

/// Runs `k0s etcd leave` for `peer_address` on `host`, a controller that still runs k0s.
async fn leave_etcd(host: &Host, paths: K0sPaths<'_>, peer_address: &str) -> anyhow::Result<()> {
    host.run(&format!(
        "{} etcd leave --peer-address={} --data-dir={}",
        quote(paths.binary),
        quote(peer_address),
        quote(paths.data_dir)
    ))
    .await?;
    Ok(())
}

/// Returns the etcd peer address of a controller: its private address, else its SSH address.
fn peer_address(spec: &HostSpec) -> String {
    spec.private_address
        .map(|address| address.to_string())
        .unwrap_or_else(|| spec.ssh.address.to_string())
}

/// Phase "Reset hosts" of `airlock reset`: workers in parallel, then the controllers one at a
/// time, the leader last, so that the cluster's data goes last.
pub struct ResetCluster;

#[async_trait]
impl Phase<Run> for ResetCluster {
    fn title(&self) -> &'static str {
        "Reset hosts"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let blueprint = newest_blueprint(run, |_| true).await?;
        let targets: Vec<ResetTarget> = run
            .nodes
            .iter()
            .map(|node| {
                ResetTarget::new(
                    &node.spec,
                    recorded_files(blueprint.as_ref(), &node.label()),
                )
            })
            .collect();

        let workers: Vec<_> = (0..run.nodes.len())
            .filter(|&index| !run.nodes[index].spec.role.is_controller())
            .map(|index| (index, run.nodes[index].host(), run.nodes[index].label()))
            .collect();
        let ui = &run.ui;
        let targets_ref = &targets;
        let reset_workers = for_each_host(
            workers,
            run.settings.concurrency,
            |(index, host, label)| async move {
                let item = ui.item(&label, None);
                item.set_state("resetting");
                match reset_host(&host, &targets_ref[index]).await {
                    Ok(()) => {
                        item.finish("reset");
                        Ok(index)
                    }
                    Err(error) => {
                        item.fail("not reset");
                        Err(HostFailure::new(label, error))
                    }
                }
            },
        )
        .await;
        let done = match reset_workers {
            Ok(done) => done,
            Err(failures) => {
                return Err(PhaseError::new(failures)
                    .with_help("fix the host named above and run `airlock reset` again; hosts already reset are skipped quickly"));
            }
        };
        for index in done {
            record_reset(run, self.title(), index, &targets[index]);
        }

        let mut controllers: Vec<usize> = (0..run.nodes.len())
            .filter(|&index| run.nodes[index].spec.role.is_controller() && index != run.leader)
            .collect();
        controllers.push(run.leader);
        for index in controllers {
            let (host, label) = (run.nodes[index].host(), run.nodes[index].label());
            reset_host(&host, &targets[index]).await.map_err(|error| {
                PhaseError::new(HostFailure::new(label.clone(), error).into_error())
            })?;
            run.ui.println(&format!("{label}: reset"));
            record_reset(run, self.title(), index, &targets[index]);
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let blueprint = newest_blueprint(run, |_| true).await?;
        for node in &run.nodes {
            let target = ResetTarget::new(
                &node.spec,
                recorded_files(blueprint.as_ref(), &node.label()),
            );
            run.ui.println(&format!(
                "{}: would stop k0s, run `{}` and remove {}",
                node.label(),
                target.reset_command,
                target.removed_paths().join(", ")
            ));
        }
        Ok(())
    }
}

fn record_reset(run: &mut Run, phase: &'static str, index: usize, target: &ResetTarget) {
    let label = run.nodes[index].label();
    run.record(
        phase,
        &label,
        format!("stop k0s and run `{}`", target.reset_command),
        None,
    );
    run.record(
        phase,
        &label,
        format!(
            "remove {} and {}",
            target.removed_paths().join(", "),
            airlock_dir(&target.data_dir)
        ),
        None,
    );
}

/// Phase "Reset marked hosts": each host with `reset: true` leaves the cluster and is reset,
/// workers first, one host at a time.
pub struct ResetMarked;

#[async_trait]
impl Phase<Run> for ResetMarked {
    fn title(&self) -> &'static str {
        "Reset marked hosts"
    }

    fn should_run(&self, run: &Run) -> bool {
        !run.marked_for_reset().is_empty()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let blueprint = newest_blueprint(run, |node| !node.spec.reset).await?;
        let mut marked = run.marked_for_reset();
        marked.sort_by_key(|&index| run.nodes[index].spec.role.is_controller());
        for index in marked {
            let node = &run.nodes[index];
            let (host, label) = (node.host(), node.label());
            let target = ResetTarget::new(&node.spec, recorded_files(blueprint.as_ref(), &label));
            let removed = leave_cluster(run, index).await.map_err(|error| {
                PhaseError::new(HostFailure::new(label.clone(), error).into_error())
            })?;
            reset_host(&host, &target).await.map_err(|error| {
                PhaseError::new(HostFailure::new(label.clone(), error).into_error())
            })?;
            run.ui
                .println(&format!("{label}: left the cluster and was reset"));
            for action in removed {
                run.record(self.title(), &label, action, None);
            }
            record_reset(run, self.title(), index, &target);
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for index in run.marked_for_reset() {
            let node = &run.nodes[index];
            let target = ResetTarget::new(&node.spec, Vec::new());
            run.ui.println(&format!(
                "{}: would drain and delete node {}{}, then run `{}`",
                node.label(),
                node.node_name(),
                if node.spec.role.is_controller() {
                    ", leave etcd"
                } else {
                    ""
                },
                target.reset_command
            ));
        }
        Ok(())
    }
}

/// Takes the marked host at `index` out of the cluster while it still runs: drain and delete its
/// node on the leader, and for a controller, `k0s etcd leave`. Returns the actions taken.
async fn leave_cluster(run: &Run, index: usize) -> anyhow::Result<Vec<String>> {
    let node = &run.nodes[index];
    let mut actions = Vec::new();
    let leader = run.leader();
    if !node.k0s_running() || !leader.k0s_running() {
        return Ok(actions);
    }
    let name = node.node_name();
    let (leader_host, leader_paths) = (leader.host(), leader.k0s_paths());
    if remove_node(
        run,
        &leader_host,
        leader_paths,
        &name,
        node.spec.role.runs_workloads(),
    )
    .await?
    {
        actions.push(format!("drain and delete node {name}"));
    }
    if node.spec.role.is_controller() {
        let address = peer_address(&node.spec);
        leave_etcd(&node.host(), node.k0s_paths(), &address).await?;
        actions.push(format!("leave etcd as peer {address}"));
    }
    Ok(actions)
}

/// Phase "Remove nodes no longer listed": with `--prune`, each node that the stored blueprint
/// records but the cluster file no longer lists is drained, deleted, taken out of etcd, and
/// reset over SSH. Without `--prune` such nodes are only named.
pub struct PruneNodes;

/// Lists the nodes that the stored blueprint records and the cluster file does not list.
async fn unlisted_nodes(run: &Run) -> Result<Vec<NodeRecord>, PhaseError> {
    let Some(blueprint) = newest_blueprint(run, |node| !node.spec.reset).await? else {
        return Ok(Vec::new());
    };
    let labels: Vec<String> = run.nodes.iter().map(Node::label).collect();
    let names: Vec<String> = run.nodes.iter().map(Node::node_name).collect();
    Ok(blueprint
        .nodes
        .into_iter()
        .filter(|record| !labels.contains(&record.label()) && !names.contains(&record.name))
        .collect())
}

#[async_trait]
impl Phase<Run> for PruneNodes {
    fn title(&self) -> &'static str {
        "Remove nodes no longer listed"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let unlisted = unlisted_nodes(run).await?;
        if unlisted.is_empty() {
            return Ok(());
        }
        if !run.settings.prune {
            for record in &unlisted {
                run.ui.warn(&format!(
                    "node {} ({}) runs in the cluster but the cluster file does not list it; run `airlock apply --prune` to remove it",
                    record.name,
                    record.label()
                ));
            }
            run.unlisted = unlisted;
            return Ok(());
        }
        // Controllers go last, so that etcd keeps its quorum as long as it can.
        let mut unlisted = unlisted;
        unlisted.sort_by_key(NodeRecord::is_controller);
        for record in unlisted {
            let actions = prune_node(run, &record).await.map_err(|error| {
                PhaseError::new(HostFailure::new(record.label(), error).into_error()).with_help(
                    "the node stays in the cluster; fix the cause and run `airlock apply --prune` again",
                )
            })?;
            run.ui
                .println(&format!("{}: removed node {}", record.label(), record.name));
            for action in actions {
                run.record(self.title(), &record.label(), action, None);
            }
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for record in unlisted_nodes(run).await? {
            let verb = if run.settings.prune {
                "would drain, delete and reset"
            } else {
                "would leave (no --prune)"
            };
            run.ui
                .println(&format!("{}: {verb} node {}", record.label(), record.name));
        }
        Ok(())
    }
}

/// Removes one unlisted node from the cluster and resets its host. The host is reached with the
/// address and port the blueprint records, and the SSH user and key of the leader.
async fn prune_node(run: &Run, record: &NodeRecord) -> anyhow::Result<Vec<String>> {
    let mut actions = Vec::new();
    let leader = run.leader();
    let (leader_host, leader_paths) = (leader.host(), leader.k0s_paths());
    let spec = unlisted_spec(run, record)?;
    // A node is often pruned because its machine died, so an unreachable host is removed from
    // the cluster through the leader alone and left as it is.
    let host = match connect_unlisted(run, &spec).await {
        Ok(host) => Some(host),
        Err(error) => {
            run.ui.warn(&format!(
                "{}: cannot connect ({error:#}); node {} is removed through the leader, but the \
                 host is not reset: if the machine comes back, run `k0s reset` on it before \
                 reusing it, or its kubelet registers the node again",
                record.label(),
                record.name
            ));
            None
        }
    };
    if remove_node(
        run,
        &leader_host,
        leader_paths,
        &record.name,
        record.runs_workloads(),
    )
    .await?
    {
        actions.push(format!("drain and delete node {}", record.name));
    }
    let spec = unlisted_spec(run, record)?;
    if record.is_controller() {
        let address = peer_address(&spec);
        // `k0s etcd leave --peer-address` removes any member, so the leader can remove a
        // controller that cannot be reached.
        let on = host.as_ref().unwrap_or(&leader_host);
        leave_etcd(on, leader_paths, &address).await?;
        actions.push(format!("leave etcd as peer {address}"));
    }
    let Some(host) = host else {
        actions.push("leave the unreachable host as it is, without a reset".to_string());
        return Ok(actions);
    };
    let target = ResetTarget::new(&spec, node_files(record));
    reset_host(&host, &target).await?;
    actions.push(format!("stop k0s and run `{}`", target.reset_command));
    actions.push(format!("remove {}", target.removed_paths().join(", ")));
    Ok(actions)
}

/// A host specification for a node that only the blueprint records: its address, port and
/// private address from the record, everything else (SSH user and key, paths) from the leader.
///
/// NOTE: the blueprint records no SSH user, key or k0s paths, so a removed node whose settings
/// differ from the leader's fails to connect or is reset with the wrong paths. Listing such a
/// host with `reset: true` for one apply avoids this.
fn unlisted_spec(run: &Run, record: &NodeRecord) -> anyhow::Result<HostSpec> {
    let mut spec = run.leader().spec.clone();
    spec.ssh.address = HostAddress::parse(&record.address).map_err(|error| {
        anyhow::anyhow!(
            "the blueprint records an invalid address {:?}: {error}",
            record.address
        )
    })?;
    spec.ssh.port = record.port;
    spec.private_address = record
        .private_address
        .as_deref()
        .and_then(|a| a.parse().ok());
    spec.kubelet_root_dir = record
        .runs_workloads()
        .then(|| DEFAULT_KUBELET_ROOT_DIR.to_string());
    spec.hostname = Some(record.name.clone());
    Ok(spec)
}

/// Connects to a host that the cluster file does not list, with the run's host key policy.
async fn connect_unlisted(run: &Run, spec: &HostSpec) -> anyhow::Result<Arc<Host>> {
    let known_hosts = KnownHosts::load(&run.settings.known_hosts)?;
    let policy = HostKeyPolicy::new(known_hosts, run.settings.accept_new_host_keys);
    // The user's ~/.ssh/config applies as for listed hosts, so a bastion there is used too.
    let target = UserSshConfig::load_default()?.target(&spec.ssh)?;
    let session =
        Session::connect_through(&target, &policy, &run.settings.connect, &JumpHosts::new())
            .await?;
    Ok(Arc::new(Host::new(session, target.user != "root")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_script_removes_airlock_files() {
        let target = ResetTarget {
            binary: "/usr/local/bin/k0s".into(),
            data_dir: "/var/lib/k0s".into(),
            reset_command: "/usr/local/bin/k0s reset --data-dir=/var/lib/k0s".into(),
            files: vec![
                "/etc/k0s/containerd.d/nvidia.toml".into(),
                "/usr/local/bin/k0s".into(),
            ],
        };
        assert_eq!(
            target.removed_paths(),
            [
                "/etc/k0s/containerd.d/nvidia.toml",
                "/etc/k0s/k0s.yaml",
                "/etc/k0s/k0stoken",
                "/usr/local/bin/k0s",
            ]
        );
        let script = target.script();
        assert!(
            script.contains("/usr/local/bin/k0s reset --data-dir=/var/lib/k0s"),
            "{script}"
        );
        assert!(
            script.contains("rm -rf -- /var/lib/k0s/airlock"),
            "{script}"
        );
        // Nested folders are removed before /etc/k0s, and only when empty.
        assert!(
            script.contains("for d in /etc/k0s/containerd.d /etc/k0s; do rmdir"),
            "{script}"
        );
    }
}
