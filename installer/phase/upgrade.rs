//! The phases of `airlock upgrade` that `apply` does not have: read what is installed, refuse
//! unsafe upgrades before any host changes, print the plan, then roll controllers one at a time,
//! workers in batches, and the stacks last.
//!
//! Progress is kept on the first controller in `<data-dir>/airlock/upgrade.json`: the target
//! bundle and the nodes that are done. When a run stops part-way, the same command continues from
//! the first node that is not done, and a done node is never drained again. Past
//! upgrades' durations (`upgrade-history.json`) let the plan say how long each step took last
//! time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::context::{Node, Run, RunMode};
use super::install_stacks::InstallStacks;
use super::k0s_ops;
use super::plan::airlock_dir;
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::blueprint::{Blueprint, FILE_NAME};
use crate::config::InstallOptions;
use crate::digest::Digest;
use crate::k0s::K0sVersion;
use crate::remote::Host;
use crate::shell::quote;
use crate::stacks::rolled_out;
use crate::ui::{format_bytes, format_count, format_duration};

/// The upgrade in progress, kept on the first controller.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeState {
    pub target_digest: Option<Digest>,
    pub target_version: u64,
    pub from_version: u64,
    /// Nodes whose upgrade finished, by node name.
    pub done: Vec<String>,
}

/// One finished node upgrade, for the durations the plan shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub node: String,
    pub role: String,
    pub from: String,
    pub to: String,
    pub seconds: u64,
}

const STATE_FILE: &str = "upgrade.json";
const HISTORY_FILE: &str = "upgrade-history.json";

fn leader_file(run: &Run, name: &str) -> String {
    format!("{}/{name}", airlock_dir(&run.leader().spec.data_dir))
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    host: &Host,
    path: &str,
) -> Result<Option<T>, PhaseError> {
    match host.read_file(path).await? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

async fn write_json<T: Serialize>(host: &Host, path: &str, value: &T) -> Result<(), PhaseError> {
    host.write_file(path, &serde_json::to_vec_pretty(value)?, "0600")
        .await?;
    Ok(())
}

/// Phase "Read the installed blueprint": what the cluster runs, from its controllers.
pub struct ReadInstalled;

#[async_trait]
impl Phase<Run> for ReadInstalled {
    fn title(&self) -> &'static str {
        "Read the installed blueprint"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let mut newest: Option<Blueprint> = None;
        for node in run
            .nodes
            .iter()
            .filter(|node| node.spec.role.is_controller())
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
        let Some(installed) = newest else {
            return Err(PhaseError::new(anyhow::anyhow!(
                "no controller holds a blueprint, so nothing airlock installed was found"
            ))
            .with_help("install the cluster with `airlock apply` first"));
        };
        run.ui.println(&format!(
            "installed: bundle {} version {} ({}), k0s {}",
            installed.bundle.name,
            installed.bundle.version,
            installed.bundle.digest,
            installed.k0s.version
        ));
        run.installed = Some(installed);
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

/// Phase "Check the upgrade": every guard, before any host changes.
pub struct CheckUpgrade;

#[async_trait]
impl Phase<Run> for CheckUpgrade {
    fn title(&self) -> &'static str {
        "Check the upgrade"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let installed = run
            .installed
            .clone()
            .expect("the blueprint is read before the checks");
        let bundle = run.shared_bundle();
        let manifest = bundle.manifest();
        let state: UpgradeState = read_json(&run.leader().host(), &leader_file(run, STATE_FILE))
            .await?
            .unwrap_or_default();
        let resuming = state.target_digest == Some(bundle.digest());
        let RunMode::Upgrade { allow_downgrade } = run.settings.mode else {
            return Ok(());
        };

        if installed.bundle.digest == bundle.digest() && !resuming {
            run.ui.println("the cluster already runs this bundle");
        } else if manifest.version <= installed.bundle.version && !resuming {
            if !allow_downgrade {
                return Err(PhaseError::new(anyhow::anyhow!(
                    "bundle version {} is not newer than the installed version {}",
                    manifest.version,
                    installed.bundle.version
                ))
                .with_help("use a newer bundle; to go back on purpose, pass --allow-downgrade (recorded in the audit log)"));
            }
            run.ui.warn(&format!(
                "downgrading from bundle version {} to {}, as --allow-downgrade asks",
                installed.bundle.version, manifest.version
            ));
            let label = run.leader().label();
            run.record(
                self.title(),
                &label,
                format!(
                    "allow downgrade from bundle version {} to {}",
                    installed.bundle.version, manifest.version
                ),
                Some(bundle.digest()),
            );
        }

        let from: K0sVersion = installed.k0s.version.parse().map_err(PhaseError::new)?;
        let to: K0sVersion = manifest.k0s.version.parse().map_err(PhaseError::new)?;
        if from.skips_minor_to(&to) {
            return Err(PhaseError::new(anyhow::anyhow!(
                "k0s {from} to {to} skips a Kubernetes minor version, which Kubernetes does not support"
            ))
            .with_help(format!("upgrade through a bundle with k0s v{}.{}.x first", from.major, from.minor + 1)));
        }
        if to < from && !allow_downgrade {
            return Err(PhaseError::new(anyhow::anyhow!(
                "the bundle's k0s {to} is older than the running k0s {from}"
            ))
            .with_help("pass --allow-downgrade to go back on purpose"));
        }

        if resuming {
            // A node stopped part-way is expected to be down; the nodes already upgraded must
            // still be healthy.
            run.ui.println(&format!(
                "continuing an interrupted upgrade; already upgraded: {}",
                if state.done.is_empty() {
                    "none".to_string()
                } else {
                    state.done.join(", ")
                }
            ));
            check_nodes(run, Some(&state.done)).await?;
        } else {
            check_health(run).await?;
        }
        run.ui.println("every guard passed");
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

/// Fails unless every node is Ready and every Deployment, DaemonSet and StatefulSet is rolled
/// out.
pub async fn check_health(run: &Run) -> Result<(), PhaseError> {
    check_nodes(run, None).await
}

/// Waits up to the ready timeout for the cluster to be healthy again after a node or batch was
/// upgraded: the node's new system pods roll out, and workers import the new images, only after
/// it is back.
async fn wait_healthy(run: &Run) -> Result<(), PhaseError> {
    k0s_ops::wait_until("the cluster", run.settings.ready_timeout, || async {
        Ok(check_health(run)
            .await
            .err()
            .map(|problems| format!("{:#}", problems.error)))
    })
    .await
    .map_err(PhaseError::new)
}

/// Checks the nodes named in `only` (every node when `None`); with `None` the workloads too.
async fn check_nodes(run: &Run, only: Option<&[String]>) -> Result<(), PhaseError> {
    let leader = run.leader();
    let host = leader.host();
    let paths = leader.k0s_paths();
    let readiness = k0s_ops::NodeReadiness::new(&host, paths);
    let mut problems = Vec::new();
    for node in &run.nodes {
        if only.is_some_and(|names| !names.contains(&node.node_name())) {
            continue;
        }
        if node.spec.role.runs_workloads()
            && let Some(state) = readiness
                .state(&node.node_name())
                .await
                .map_err(PhaseError::new)?
        {
            problems.push(format!("node {}: {state}", node.node_name()));
        }
    }
    let output = if only.is_none() {
        host.run(&paths.kubectl("get deployments,daemonsets,statefulsets -A -o json"))
            .await?
    } else {
        "{}".to_string()
    };
    let list: serde_json::Value = serde_json::from_str(&output).map_err(PhaseError::new)?;
    for item in list["items"].as_array().into_iter().flatten() {
        if let Some(state) = rolled_out(item) {
            let name = format!(
                "{} {}/{}",
                item["kind"].as_str().unwrap_or_default(),
                item["metadata"]["namespace"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap_or_default()
            );
            problems.push(format!("{name}: {state}"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(PhaseError::new(anyhow::anyhow!(
        "the cluster is not healthy:\n  {}",
        problems.join("\n  ")
    ))
    .with_help(
        "fix what is listed (or wait for it), then run the same command again; nothing was changed",
    ))
}

/// Phase "Plan the upgrade": what changes on each host and stack, printed before anything
/// changes. In a dry run, the phases after it change nothing.
pub struct PlanUpgrade {
    /// The number of workers upgraded at once, as [`UpgradeWorkers`] takes them.
    pub worker_batch: usize,
}

#[async_trait]
impl Phase<Run> for PlanUpgrade {
    fn title(&self) -> &'static str {
        "Plan the upgrade"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let history: Vec<HistoryEntry> =
            read_json(&run.leader().host(), &leader_file(run, HISTORY_FILE))
                .await?
                .unwrap_or_default();
        let last = |controller: bool| {
            history
                .iter()
                .rev()
                .find(|entry| (entry.role != "worker") == controller)
                .map(|entry| match entry.seconds {
                    // The history keeps whole seconds.
                    0 => " (took under a second last time)".to_string(),
                    seconds => format!(
                        " (took {} last time)",
                        format_duration(Duration::from_secs(seconds))
                    ),
                })
                .unwrap_or_default()
        };
        let target = run.bundle().manifest().k0s.version.clone();
        let mut workers_to_upgrade = 0;
        for node in &run.nodes {
            if !node.spec.role.is_controller() && node.needs_upgrade(&target) {
                workers_to_upgrade += 1;
            }
            let from = node
                .facts
                .k0s_status
                .as_ref()
                .map(|status| status.version.clone())
                .unwrap_or_else(|| "not running".into());
            let uploads: Vec<&super::plan::PlannedFile> =
                node.uploads.iter().filter(|file| !file.present).collect();
            let bytes: u64 = uploads.iter().map(|file| file.size).sum();
            let action = if from == target {
                "no change".to_string()
            } else if node.spec.role.is_controller() {
                format!("stop, replace k0s, reinstall, start{}", last(true))
            } else {
                format!(
                    "cordon, drain, stop, replace k0s, reinstall, start, uncordon{}",
                    last(false)
                )
            };
            run.ui.println(&format!(
                "{} ({}): k0s {from} -> {target}; upload {}, {}; {action}",
                node.label(),
                node.spec.role,
                format_count(uploads.len(), "file", "files"),
                format_bytes(bytes)
            ));
        }
        if workers_to_upgrade > 1 {
            let batch = self.worker_batch.clamp(1, workers_to_upgrade);
            let concurrency = &run.cluster.options.concurrency;
            let workers = run.workers().len();
            let source = if self.worker_batch == concurrency.worker_batch(None, workers) {
                format!(
                    "workerDisruptionPercent {} % of {}, at least 1; --concurrency sets another size",
                    concurrency.worker_disruption_percent,
                    format_count(workers, "worker", "workers")
                )
            } else {
                "--concurrency".to_string()
            };
            run.ui.println(&format!(
                "workers: {batch} at a time, {} ({source})",
                format_count(workers_to_upgrade.div_ceil(batch), "batch", "batches")
            ));
        }
        let installed = run
            .installed
            .as_ref()
            .map(Blueprint::stack_versions)
            .unwrap_or_default();
        let enabled: Vec<&str> = run
            .stacks
            .iter()
            .flat_map(|r| &r.stacks)
            .map(|s| s.stack.name())
            .collect();
        for stack in &run.bundle().manifest().stacks {
            let before = installed.get(&stack.name);
            let change = match before {
                _ if !enabled.contains(&stack.name.as_str()) => "not enabled on this cluster",
                None => "install",
                Some(version) if *version == stack.version => "unchanged",
                Some(version) if is_older(&stack.version, version) => "downgrade",
                Some(_) => "upgrade",
            };
            let before = before.map_or("not installed", String::as_str);
            run.ui.println(&format!(
                "stack {}: {before} -> {} ({change})",
                stack.name, stack.version
            ));
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        self.run(run).await
    }
}

/// Whether version `a` is older than `b`, comparing their dot-separated numbers (a leading `v`
/// and anything after a `-` or `+` aside). Versions that are not numbers compare as not older.
fn is_older(a: &str, b: &str) -> bool {
    let numbers = |version: &str| -> Option<Vec<u64>> {
        let core = version.trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or(core);
        core.split('.').map(|part| part.parse().ok()).collect()
    };
    matches!((numbers(a), numbers(b)), (Some(a), Some(b)) if a < b)
}

/// Phase "Upgrade controllers": one at a time, the cluster checked healthy after each.
pub struct UpgradeControllers;

/// Phase "Upgrade workers": in batches of `batch` workers, each drained first.
pub struct UpgradeWorkers {
    pub batch: usize,
}

impl Node {
    fn needs_upgrade(&self, target: &str) -> bool {
        self.facts
            .k0s_status
            .as_ref()
            .is_none_or(|status| status.version != target)
            || self.facts.k0s_binary_version.as_deref() != Some(target)
    }
}

#[async_trait]
impl Phase<Run> for UpgradeControllers {
    fn title(&self) -> &'static str {
        "Upgrade controllers"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let target = run.bundle().manifest().k0s.version.clone();
        begin(run).await?;
        let mut order: Vec<usize> = vec![run.leader];
        order.extend(run.other_controllers());
        for index in order {
            if !run.nodes[index].needs_upgrade(&target) {
                continue;
            }
            let started = Instant::now();
            upgrade_node(run, index, false)
                .await
                .map_err(|e| stopped(run, index, e))?;
            finish_node(run, index, started).await?;
            wait_healthy(run)
                .await
                .map_err(|e| gate_failed(run, index, e))?;
        }
        Ok(())
    }

    async fn dry_run(&mut self, _run: &mut Run) -> Result<(), PhaseError> {
        Ok(())
    }
}

#[async_trait]
impl Phase<Run> for UpgradeWorkers {
    fn title(&self) -> &'static str {
        "Upgrade workers"
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let target = run.bundle().manifest().k0s.version.clone();
        let pending: Vec<usize> = run
            .workers()
            .into_iter()
            .filter(|&index| run.nodes[index].needs_upgrade(&target))
            .collect();
        for batch in pending.chunks(self.batch.max(1)) {
            let started = Instant::now();
            let work: Vec<usize> = batch.to_vec();
            let results = {
                let run_ref: &Run = run;
                for_each_host(work, batch.len(), |index| async move {
                    upgrade_worker(run_ref, index)
                        .await
                        .map_err(|e| HostFailure::new(run_ref.nodes[index].label(), e))
                })
                .await
            };
            if let Err(failures) = results {
                let first = batch[0];
                return Err(stopped(run, first, anyhow::Error::new(failures)));
            }
            for &index in batch {
                finish_node(run, index, started).await?;
            }
            wait_healthy(run)
                .await
                .map_err(|e| gate_failed(run, batch[0], e))?;
        }
        Ok(())
    }

    async fn dry_run(&mut self, _run: &mut Run) -> Result<(), PhaseError> {
        Ok(())
    }
}

/// Records the target bundle on the first controller, so that an interrupted upgrade continues
/// with the same bundle.
async fn begin(run: &mut Run) -> Result<(), PhaseError> {
    let path = leader_file(run, STATE_FILE);
    let host = run.leader().host();
    let mut state: UpgradeState = read_json(&host, &path).await?.unwrap_or_default();
    let digest = run.bundle().digest();
    if state.target_digest != Some(digest) {
        state = UpgradeState {
            target_digest: Some(digest),
            target_version: run.bundle().manifest().version,
            from_version: run
                .installed
                .as_ref()
                .map_or(0, |blueprint| blueprint.bundle.version),
            done: Vec::new(),
        };
        write_json(&host, &path, &state).await?;
    }
    Ok(())
}

/// Stops, replaces, reinstalls and starts k0s on one node; workers are drained by the caller.
async fn upgrade_node(run: &Run, index: usize, worker: bool) -> anyhow::Result<()> {
    let node = &run.nodes[index];
    let host = node.host();
    let paths = node.k0s_paths();
    let label = node.label();
    let timeout = run.settings.ready_timeout;
    let ui = &run.ui;
    let item = ui.item(&label, None);

    item.set_state("stopping k0s");
    let _ = host.run(&format!("{} stop", quote(paths.binary))).await;
    item.set_state("replacing k0s");
    move_staged(&host, node, |file| {
        file.final_path.as_deref() == Some(node.spec.k0s_install_path.as_str())
    })
    .await?;
    item.set_state("reinstalling the service");
    let options = InstallOptions {
        leader: index == run.leader,
        force: true,
    };
    host.run(&run.cluster.install_command(&node.spec, options)?)
        .await?;
    item.set_state("starting k0s");
    k0s_ops::start(&host, paths, timeout).await?;
    if node.spec.role.is_controller() {
        k0s_ops::wait_api_ready(&host, paths, timeout).await?;
    }
    if worker || node.spec.role.runs_workloads() {
        let leader = run.leader();
        item.set_state("waiting for Ready");
        k0s_ops::wait_node_ready(
            &leader.host(),
            leader.k0s_paths(),
            &node.node_name(),
            timeout,
        )
        .await?;
    }
    item.finish("upgraded");
    Ok(())
}

/// Cordons and drains a worker on the first controller, upgrades it, and uncordons it.
async fn upgrade_worker(run: &Run, index: usize) -> anyhow::Result<()> {
    let leader = run.leader();
    let (host, paths) = (leader.host(), leader.k0s_paths());
    let name = quote(&run.nodes[index].node_name());
    let drain = &run.cluster.options.drain;
    // A worker stopped part-way through an earlier run is cordoned and already drained.
    let node: serde_json::Value = serde_json::from_str(
        &host
            .run(&paths.kubectl(&format!("get node {name} -o json")))
            .await?,
    )?;
    let cordoned = node["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let (label, node_name) = (run.nodes[index].label(), run.nodes[index].node_name());
    if cordoned {
        run.ui.println(&format!(
            "{label}: node {node_name} is cordoned already, by an earlier run"
        ));
    } else {
        host.run(&paths.kubectl(&format!("cordon {name}"))).await?;
        if drain.enabled {
            let args = drain.kubectl_args().join(" ");
            host.run(&paths.kubectl(&format!("drain {args} {name}")))
                .await
                .map_err(|error| {
                    anyhow::Error::new(error).context(
                        "the drain did not finish; a PodDisruptionBudget may forbid evicting a pod",
                    )
                })?;
            run.ui
                .println(&format!("{label}: cordoned and drained node {node_name}"));
        } else {
            run.ui.println(&format!(
                "{label}: cordoned node {node_name} (spec.options.drain.enabled is false)"
            ));
        }
    }
    upgrade_node(run, index, true).await?;
    host.run(&paths.kubectl(&format!("uncordon {name}")))
        .await?;
    run.ui
        .println(&format!("{label}: uncordoned node {node_name}"));
    Ok(())
}

/// Moves staged files that `select` picks into place, checking each digest on the host.
async fn move_staged(
    host: &Host,
    node: &Node,
    select: impl Fn(&super::plan::PlannedFile) -> bool,
) -> anyhow::Result<()> {
    for file in node.uploads.iter().filter(|file| select(file)) {
        let Some(final_path) = &file.final_path else {
            continue;
        };
        if host.sha256(final_path).await? == Some(file.digest) {
            continue;
        }
        match host.sha256(&file.path).await? {
            Some(staged) if staged == file.digest => {}
            Some(staged) => anyhow::bail!(
                "the staged {} holds {staged}, not the expected {}",
                file.path,
                file.digest
            ),
            None => anyhow::bail!(
                "the staged {} is missing; run the same command again to upload it",
                file.path
            ),
        }
        let dir = final_path.rsplit_once('/').map_or(".", |(dir, _)| dir);
        host.run(&format!(
            "mkdir -p {} && chmod {} {} && mv -f {} {}",
            quote(dir),
            file.mode,
            quote(&file.path),
            quote(&file.path),
            quote(final_path)
        ))
        .await?;
    }
    Ok(())
}

/// Records a finished node: its upgrade state and history on the first controller, the run's
/// view of it, and the blueprint, so that both stay true after a partial upgrade.
async fn finish_node(run: &mut Run, index: usize, started: Instant) -> Result<(), PhaseError> {
    let target = run.bundle().manifest().k0s.version.clone();
    let node = &mut run.nodes[index];
    let from = node
        .facts
        .k0s_status
        .as_ref()
        .map(|status| status.version.clone())
        .unwrap_or_default();
    if let Some(status) = node.facts.k0s_status.as_mut() {
        status.version = target.clone();
    } else {
        node.facts.k0s_status = k0s_ops::status(&node.host(), node.k0s_paths()).await?;
    }
    node.facts.k0s_binary_version = Some(target.clone());
    for file in &node.uploads {
        if let Some(final_path) = &file.final_path
            && *final_path == node.spec.k0s_install_path
        {
            node.placed.insert(final_path.clone(), file.digest);
            node.placed_modes
                .insert(final_path.clone(), file.placed_mode());
        }
    }
    let (name, role, label) = (node.node_name(), node.spec.role.to_string(), node.label());
    let seconds = started.elapsed().as_secs();

    let host = run.leader().host();
    let state_path = leader_file(run, STATE_FILE);
    let mut state: UpgradeState = read_json(&host, &state_path).await?.unwrap_or_default();
    if !state.done.contains(&name) {
        state.done.push(name.clone());
    }
    write_json(&host, &state_path, &state).await?;
    let history_path = leader_file(run, HISTORY_FILE);
    let mut history: Vec<HistoryEntry> = read_json(&host, &history_path).await?.unwrap_or_default();
    history.push(HistoryEntry {
        node: name.clone(),
        role,
        from: from.clone(),
        to: target.clone(),
        seconds,
    });
    write_json(&host, &history_path, &history).await?;

    run.record(
        "Upgrade",
        &label,
        format!("upgrade k0s on {name} from {from} to {target}"),
        None,
    );
    super::write_blueprint::write(run, super::write_blueprint::Summary::Skip).await?;
    run.ui.println(&format!(
        "{label}: {name} runs k0s {target} ({})",
        format_duration(started.elapsed())
    ));
    Ok(())
}

fn stopped(run: &Run, index: usize, error: anyhow::Error) -> PhaseError {
    let remaining: Vec<String> = run
        .nodes
        .iter()
        .filter(|n| n.needs_upgrade(&run.bundle().manifest().k0s.version))
        .map(Node::node_name)
        .collect();
    PhaseError::new(error.context(format!("the upgrade of {} failed", run.nodes[index].node_name()))).with_help(format!(
        "nodes not upgraded yet were left untouched ({}); fix the cause, then run the same command again to continue",
        remaining.join(", ")
    ))
}

fn gate_failed(run: &Run, index: usize, error: PhaseError) -> PhaseError {
    PhaseError::new(error.error.context(format!("the cluster is not healthy after upgrading {}", run.nodes[index].node_name())))
        .with_help("the remaining nodes were left untouched; once the cluster is healthy again, run the same command to continue")
}

/// Phase "Upgrade the stacks": moves the new manifests into place, waits for every stack, then
/// removes image and chart archives that the new stacks no longer use.
pub struct UpgradeStacks;

#[async_trait]
impl Phase<Run> for UpgradeStacks {
    fn title(&self) -> &'static str {
        "Upgrade the stacks"
    }

    fn should_run(&self, run: &Run) -> bool {
        run.stacks.is_some()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let controllers: Vec<usize> = (0..run.nodes.len())
            .filter(|&i| run.nodes[i].spec.role.is_controller())
            .collect();
        for index in controllers {
            let node = &run.nodes[index];
            let manifests = format!("{}/manifests/", node.spec.data_dir.trim_end_matches('/'));
            move_staged(&node.host(), node, |file| {
                file.final_path
                    .as_deref()
                    .is_some_and(|path| path.starts_with(&manifests))
            })
            .await
            .map_err(|e| PhaseError::new(HostFailure::new(node.label(), e).into_error()))?;
            let node = &mut run.nodes[index];
            for file in &node.uploads {
                if let Some(final_path) = &file.final_path
                    && final_path.starts_with(&manifests)
                {
                    node.placed.insert(final_path.clone(), file.digest);
                    node.placed_modes
                        .insert(final_path.clone(), file.placed_mode());
                }
            }
        }
        InstallStacks.run(run).await?;
        remove_old_archives(run).await?;
        let host = run.leader().host();
        let _ = host
            .run(&format!("rm -f {}", quote(&leader_file(run, STATE_FILE))))
            .await;
        Ok(())
    }

    async fn dry_run(&mut self, _run: &mut Run) -> Result<(), PhaseError> {
        Ok(())
    }
}

/// Removes archives under `<data-dir>/images` and chart archives that the installed blueprint
/// lists but the new plan does not: the old versions, now that the new ones run.
async fn remove_old_archives(run: &mut Run) -> Result<(), PhaseError> {
    let Some(installed) = run.installed.clone() else {
        return Ok(());
    };
    let old: BTreeMap<String, Vec<String>> = installed
        .nodes
        .iter()
        .map(|record| (record.name.clone(), record.files.keys().cloned().collect()))
        .collect();
    for node in &mut run.nodes {
        let Some(files) = old.get(&node.node_name()) else {
            continue;
        };
        let data_dir = node.spec.data_dir.trim_end_matches('/').to_string();
        let archives = [
            format!("{data_dir}/images/"),
            format!("{data_dir}/charts/"),
            format!("{data_dir}/airlock/charts/"),
        ];
        let stale: Vec<&String> = files
            .iter()
            .filter(|path| archives.iter().any(|dir| path.starts_with(dir)))
            .filter(|path| {
                !node.uploads.iter().any(|file| {
                    file.path == **path || file.final_path.as_deref() == Some(path.as_str())
                })
            })
            .collect();
        for path in stale {
            node.host().run(&format!("rm -f {}", quote(path))).await?;
            node.placed.remove(path);
            node.placed_modes.remove(path);
            run.ui.println(&format!(
                "{}: removed {path}, which the new bundle replaced",
                node.label()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_versions_compare_by_number() {
        assert!(is_older("88.5.3", "88.6.0"));
        assert!(is_older("v1.9.0", "v1.10.0"));
        assert!(!is_older("3.9.1", "3.9.0"));
        assert!(!is_older("3.9.1", "3.9.1"));
        assert!(!is_older("latest", "3.9.1"));
    }
}
