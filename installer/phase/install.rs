//! Phases "Initialize the cluster", "Join controllers" and "Join workers": install k0s as a
//! service on each host, start it, and wait until it is ready.
//!
//! The first controller initializes the cluster. Every other host joins with a join token of its
//! own, created on the first controller and written to the host through standard input. The
//! tokens of a phase are invalidated together, in one command, once its joins are done. Hosts
//! that already run k0s are left alone; a host whose service is installed but not running (a join
//! that stopped part-way) is reinstalled with `--force`.

use std::time::Duration;

use async_trait::async_trait;

use super::context::Run;
use super::k0s_ops::{self, JoinToken, K0sPaths};
use super::{HostFailure, Phase, PhaseError, for_each_host};
use crate::config::{Cluster, Host as HostSpec, InstallOptions};
use crate::remote::Host;
use crate::shell::quote;

/// How long a controller join token lives; k0sctl uses the same.
const CONTROLLER_TOKEN_EXPIRY: &str = "30m";
/// How long a worker join token lives; k0sctl uses the same.
const WORKER_TOKEN_EXPIRY: &str = "10m";

pub struct InitializeCluster;

#[async_trait]
impl Phase<Run> for InitializeCluster {
    fn title(&self) -> &'static str {
        "Initialize the cluster"
    }

    fn should_run(&self, run: &Run) -> bool {
        !run.leader().k0s_running()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let index = run.leader;
        let node = &run.nodes[index];
        let (host, label, name) = (node.host(), node.label(), node.node_name());
        let options = InstallOptions {
            leader: true,
            force: node.half_installed(),
        };
        let spec = node.spec.clone();
        run.nodes[index].installed_by_this_run = true;

        let timeout = run.settings.ready_timeout;
        let installed = install_and_start(&run.cluster, &spec, &host, options, None, timeout).await;
        installed.map_err(|e| PhaseError::new(HostFailure::new(label.clone(), e).into_error()))?;
        if spec.role.runs_workloads() {
            let paths = run.nodes[index].k0s_paths();
            k0s_ops::wait_node_ready(&host, paths, &name, timeout)
                .await
                .map_err(|e| PhaseError::new(HostFailure::new(label.clone(), e).into_error()))?;
        }
        run.nodes[index].became_ready = true;
        run.ui
            .println(&format!("{label}: k0s controller initialized the cluster"));
        run.record(
            self.title(),
            &label,
            "install and start the first controller",
            None,
        );
        super::hooks::record_install_hooks(run, index, self.title());
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let node = run.leader();
        let options = InstallOptions {
            leader: true,
            force: node.half_installed(),
        };
        let command = run.cluster.install_command(&node.spec, options)?;
        run.ui.println(&format!(
            "{}: would run `{command}`, start k0s and wait for the API server",
            node.label()
        ));
        super::hooks::describe_install_hooks(run, node);
        Ok(())
    }

    async fn clean_up(&mut self, run: &mut Run) {
        reset_unready(run, |run, index| index == run.leader).await;
    }
}

pub struct JoinControllers;

#[async_trait]
impl Phase<Run> for JoinControllers {
    fn title(&self) -> &'static str {
        "Join controllers"
    }

    fn should_run(&self, run: &Run) -> bool {
        run.other_controllers()
            .iter()
            .any(|&index| !run.nodes[index].k0s_running())
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let leader = run.leader().host();
        let leader_spec = run.leader().spec.clone();
        let leader_paths = K0sPaths {
            binary: &leader_spec.k0s_install_path,
            data_dir: &leader_spec.data_dir,
        };
        let timeout = run.settings.ready_timeout;
        // One at a time: etcd grows its membership one member at a time.
        for index in run.other_controllers() {
            let node = &run.nodes[index];
            if node.k0s_running() {
                continue;
            }
            let (host, label, name, spec) = (
                node.host(),
                node.label(),
                node.node_name(),
                node.spec.clone(),
            );
            let options = InstallOptions {
                leader: false,
                force: node.half_installed(),
            };
            run.nodes[index].installed_by_this_run = true;
            run.nodes[index]
                .on_release
                .push(k0s_ops::scrub_token_command());
            let joins = Joins::new(&run.cluster, &leader, leader_paths, timeout);
            let joined = joins
                .join(&spec, &host, TokenRole::Controller, options, &name)
                .await;
            joins.invalidate_tokens().await;
            joined.map_err(|e| PhaseError::new(HostFailure::new(label.clone(), e).into_error()))?;
            run.nodes[index].became_ready = true;
            run.ui.println(&format!("{label}: joined as {}", spec.role));
            run.record(self.title(), &label, format!("join as {}", spec.role), None);
            super::hooks::record_install_hooks(run, index, self.title());
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for index in run.other_controllers() {
            describe_join(run, index)?;
        }
        Ok(())
    }

    async fn clean_up(&mut self, run: &mut Run) {
        let controllers = run.other_controllers();
        reset_unready(run, |_, index| controllers.contains(&index)).await;
    }
}

pub struct JoinWorkers;

#[async_trait]
impl Phase<Run> for JoinWorkers {
    fn title(&self) -> &'static str {
        "Join workers"
    }

    fn should_run(&self, run: &Run) -> bool {
        !run.workers().is_empty()
    }

    async fn run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        let leader = run.leader().host();
        let leader_spec = run.leader().spec.clone();
        let leader_paths = K0sPaths {
            binary: &leader_spec.k0s_install_path,
            data_dir: &leader_spec.data_dir,
        };
        let timeout = run.settings.ready_timeout;
        let work: Vec<_> = run
            .workers()
            .into_iter()
            .map(|index| {
                let node = &run.nodes[index];
                let options = InstallOptions {
                    leader: false,
                    force: node.half_installed(),
                };
                (
                    index,
                    node.host(),
                    node.label(),
                    node.node_name(),
                    node.spec.clone(),
                    node.k0s_running(),
                    options,
                )
            })
            .collect();
        for (index, _, _, _, _, running, _) in &work {
            if !running {
                let node = &mut run.nodes[*index];
                node.installed_by_this_run = true;
                node.on_release.push(k0s_ops::scrub_token_command());
            }
        }
        let joins = Joins::new(&run.cluster, &leader, leader_paths, timeout);
        let joins = &joins;
        let ui = &run.ui;
        let result = for_each_host(
            work,
            run.settings.concurrency,
            |(index, host, label, name, spec, running, options)| async move {
                let item = ui.item(&label, None);
                let outcome = if running {
                    item.set_state("waiting for Ready");
                    joins.readiness.wait(&name, timeout).await.map(|()| false)
                } else {
                    item.set_state("joining");
                    joins
                        .join(&spec, &host, TokenRole::Worker, options, &name)
                        .await
                        .map(|()| true)
                };
                match outcome {
                    Ok(joined) => {
                        item.finish(if joined { "joined, Ready" } else { "Ready" });
                        Ok((index, joined))
                    }
                    Err(error) => {
                        item.fail("not Ready");
                        Err(HostFailure::new(label, error))
                    }
                }
            },
        )
        .await;
        joins.invalidate_tokens().await;
        let joined = match result {
            Ok(joined) => joined,
            Err(failures) => {
                // Workers that did become ready stay; clean-up resets only the others.
                for index in run.workers() {
                    let label = run.nodes[index].label();
                    if !failures
                        .failures
                        .iter()
                        .any(|failure| failure.host == label)
                    {
                        run.nodes[index].became_ready = true;
                    }
                }
                return Err(PhaseError::new(failures));
            }
        };
        for (index, newly) in joined {
            run.nodes[index].became_ready = true;
            if newly {
                let label = run.nodes[index].label();
                run.record(self.title(), &label, "join as worker", None);
                super::hooks::record_install_hooks(run, index, self.title());
            }
        }
        Ok(())
    }

    async fn dry_run(&mut self, run: &mut Run) -> Result<(), PhaseError> {
        for index in run.workers() {
            describe_join(run, index)?;
        }
        Ok(())
    }

    async fn clean_up(&mut self, run: &mut Run) {
        let workers = run.workers();
        reset_unready(run, |_, index| workers.contains(&index)).await;
    }
}

/// Installs k0s as a service and starts it, after writing the join token when there is one;
/// the caller waits for what readiness means. Without `install.before` hooks, writing the token,
/// installing and starting are one command, so a join costs one round trip to the host.
async fn install_and_start(
    cluster: &Cluster,
    spec: &HostSpec,
    host: &Host,
    options: InstallOptions,
    token: Option<&JoinToken>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let paths = K0sPaths {
        binary: &spec.k0s_install_path,
        data_dir: &spec.data_dir,
    };
    let mut prepare = Vec::new();
    if options.force {
        // A service left by a join that stopped part-way; k0s refuses to start it twice.
        prepare.push(format!(
            "{{ {} stop >/dev/null 2>&1 || true; }}",
            quote(&spec.k0s_install_path)
        ));
    }
    if token.is_some() {
        prepare.push(k0s_ops::write_token_command());
    }
    let input = token.map(JoinToken::file_contents).unwrap_or_default();
    let install = with_environment(cluster.install_command(spec, options)?, spec);
    tracing::debug!(host = %host.label(), command = %install, "installing k0s");
    let setup = [install, k0s_ops::start_command(paths)];
    if spec.hooks.commands("install", "before").is_empty() {
        host.run_with_input(&[prepare, setup.to_vec()].concat().join(" && "), &input)
            .await?;
    } else {
        if !prepare.is_empty() {
            host.run_with_input(&prepare.join(" && "), &input).await?;
        }
        super::hooks::run_host_hooks(host, spec, "install", "before").await?;
        host.run(&setup.join(" && ")).await?;
    }
    if spec.role.is_controller() {
        k0s_ops::wait_running(host, paths, timeout).await?;
        k0s_ops::wait_api_ready(host, paths, timeout).await?;
    }
    // A worker's node becoming Ready shows that k0s runs, so the caller waits for that instead
    // of polling `k0s status` as well, which would start k0s once more per worker. A worker that
    // never becomes Ready is reported with its service log.
    super::hooks::run_host_hooks(host, spec, "install", "after").await?;
    Ok(())
}

/// Adds the host's `environment` to the service as `k0s install --env` does, as k0sctl sets it
/// for the service.
pub fn with_environment(command: String, spec: &HostSpec) -> String {
    spec.environment
        .iter()
        .fold(command, |command, (name, value)| {
            format!("{command} --env {}", quote(&format!("{name}={value}")))
        })
}

/// The role a join token grants, and how long it lives (as long as k0sctl's).
#[derive(Clone, Copy)]
enum TokenRole {
    Controller,
    Worker,
}

impl TokenRole {
    fn name(self) -> &'static str {
        match self {
            TokenRole::Controller => "controller",
            TokenRole::Worker => "worker",
        }
    }

    fn expiry(self) -> &'static str {
        match self {
            TokenRole::Controller => CONTROLLER_TOKEN_EXPIRY,
            TokenRole::Worker => WORKER_TOKEN_EXPIRY,
        }
    }
}

/// The state that the joins of one phase share: the leader, which issues the tokens and reports
/// whether the nodes are Ready, and how long each host may take.
struct Joins<'a> {
    cluster: &'a Cluster,
    leader: &'a Host,
    leader_paths: K0sPaths<'a>,
    readiness: k0s_ops::NodeReadiness<'a>,
    timeout: Duration,
    /// The ids of the tokens created so far and not yet invalidated.
    issued: std::sync::Mutex<Vec<String>>,
}

impl<'a> Joins<'a> {
    fn new(
        cluster: &'a Cluster,
        leader: &'a Host,
        leader_paths: K0sPaths<'a>,
        timeout: Duration,
    ) -> Joins<'a> {
        Joins {
            cluster,
            leader,
            leader_paths,
            readiness: k0s_ops::NodeReadiness::new(leader, leader_paths),
            timeout,
            issued: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Invalidates every token these joins created, whether or not its join worked, in one
    /// command on the leader. A token that cannot be invalidated expires by itself.
    async fn invalidate_tokens(&self) {
        let ids = std::mem::take(&mut *self.issued.lock().expect("token ids lock"));
        if ids.is_empty() {
            return;
        }
        if let Err(error) = k0s_ops::invalidate_tokens(self.leader, self.leader_paths, &ids).await {
            tracing::warn!(host = %self.leader.label(), token_ids = %ids.join(","), %error, "cannot invalidate the join tokens; they expire by themselves");
        }
    }

    /// Joins one host with a token of its own and waits until it is ready. The caller
    /// invalidates the token afterwards with [`Self::invalidate_tokens`], and the token file is
    /// overwritten when the run releases the host, by a command the caller adds to
    /// [`on_release`](super::context::Node::on_release).
    async fn join(
        &self,
        spec: &HostSpec,
        host: &Host,
        role: TokenRole,
        options: InstallOptions,
        node_name: &str,
    ) -> anyhow::Result<()> {
        let (leader, paths) = (self.leader, self.leader_paths);
        let token = k0s_ops::create_token(leader, paths, role.name(), role.expiry()).await?;
        self.issued
            .lock()
            .expect("token ids lock")
            .push(token.id.clone());
        install_and_start(
            self.cluster,
            spec,
            host,
            options,
            Some(&token),
            self.timeout,
        )
        .await?;
        if spec.role.runs_workloads()
            && let Err(error) = self.readiness.wait(node_name, self.timeout).await
        {
            return Err(match k0s_ops::service_log(host).await {
                Some(log) => anyhow::anyhow!("{error:#}; the k0s service log ends: {log}"),
                None => error,
            });
        }
        Ok(())
    }
}

fn describe_join(run: &Run, index: usize) -> Result<(), PhaseError> {
    let node = &run.nodes[index];
    if node.k0s_running() {
        run.ui.println(&format!(
            "{}: already runs k0s; would only wait for it to be ready",
            node.label()
        ));
        return Ok(());
    }
    let options = InstallOptions {
        leader: false,
        force: node.half_installed(),
    };
    let command = run.cluster.install_command(&node.spec, options)?;
    run.ui.println(&format!(
        "{}: would write a join token from {}, run `{command}`, start k0s and wait until it is ready",
        node.label(),
        run.leader().label()
    ));
    super::hooks::describe_install_hooks(run, node);
    Ok(())
}

/// Resets the hosts `select` picks that this run installed but that never became ready, as
/// k0sctl does after a failed install, so that a new run starts them clean.
async fn reset_unready(run: &mut Run, select: impl Fn(&Run, usize) -> bool) {
    for index in 0..run.nodes.len() {
        let node = &run.nodes[index];
        if !select(run, index) || !node.installed_by_this_run || node.became_ready {
            continue;
        }
        let Some(host) = node.connection.clone() else {
            continue;
        };
        let binary = quote(&node.spec.k0s_install_path);
        let script = format!(
            "{binary} stop >/dev/null 2>&1; {}",
            node.spec.reset_command()
        );
        match host.run(&script).await {
            Ok(_) => run.ui.println(&format!(
                "{}: reset the k0s installation that did not become ready",
                node.label()
            )),
            Err(error) => {
                tracing::warn!(host = %node.label(), %error, "cannot reset the half-installed k0s")
            }
        }
    }
}
