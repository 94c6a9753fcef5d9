//! `airlock status`: drift between the live cluster and its blueprint.
//!
//! The blueprint comes from the controllers (the newest copy when they differ). Every host is
//! then read over SSH (k0s version and state, the sha256 of every file the blueprint lists). The
//! API of the first controller whose k0s runs provides the cluster-wide facts: nodes, stack
//! readiness checks, policies and the cluster id. Each difference is printed under its host.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use futures::stream::{self, StreamExt};

use super::apply::ClusterArgs;
use super::apply::ConnectionArgs;
use super::report::print_output;
use super::{CliError, CliResult, Status};
use crate::blueprint::controllers::remote_path;
use crate::blueprint::drift::{self, Finding, Observed};
use crate::blueprint::live::{self, HostObservation, LiveCluster};
use crate::blueprint::{self, Blueprint};
use crate::config::{Cluster, Host as HostSpec};
use crate::phase::K0sPaths;
use crate::remote::{Host, HostKeyPolicy, JumpHosts, KnownHosts, Session, UserSshConfig};
use crate::ui::{Ui, format_count};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The maximum number of hosts read at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

/// A host of the cluster file and its connection, or why there is none.
pub struct Connected {
    pub spec: HostSpec,
    pub host: Result<Arc<Host>, String>,
}

impl Connected {
    pub fn label(&self) -> String {
        self.spec.to_string()
    }
}

/// Connects to every host `select` picks, `concurrency` at a time; a host that cannot be
/// reached carries the reason instead of failing the others.
pub async fn connect_hosts(
    cluster: &Cluster,
    connection: &ConnectionArgs,
    concurrency: usize,
    select: impl Fn(&HostSpec) -> bool,
) -> Result<Vec<Connected>, CliError> {
    let known_hosts =
        KnownHosts::load(&connection.known_hosts_path()?).map_err(CliError::failure)?;
    let policy = HostKeyPolicy::new(known_hosts, connection.accept_new_host_keys);
    let options = connection.connect_options();
    let ssh_config = UserSshConfig::load_default().map_err(CliError::usage)?;
    let ssh_config = &ssh_config;
    let jumps = &JumpHosts::new();
    let specs: Vec<HostSpec> = cluster
        .hosts
        .iter()
        .filter(|h| select(h))
        .cloned()
        .collect();
    Ok(stream::iter(specs)
        .map(|spec| {
            let policy = policy.clone();
            let options = &options;
            async move {
                let host = match ssh_config.target(&spec.ssh) {
                    Ok(target) => Session::connect_through(&target, &policy, options, jumps)
                        .await
                        .map(|session| Arc::new(Host::new(session, target.user != "root")))
                        .map_err(|error| format!("{error:#}")),
                    Err(error) => Err(error.to_string()),
                };
                Connected { spec, host }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await)
}

/// The prefix of the error text of a blueprint copy whose controller could not be reached.
const UNREACHABLE: &str = "unreachable: ";

/// Reads the blueprint copy of every controller, newest first (by audit entries, then write
/// time). A controller that could not be reached has its connection error in place of a copy.
pub async fn fetch_blueprints(
    controllers: &[Connected],
) -> Vec<(String, Result<Blueprint, String>)> {
    let mut copies = Vec::new();
    for controller in controllers {
        let host = match &controller.host {
            Ok(host) => host,
            Err(error) => {
                copies.push((controller.label(), Err(format!("{UNREACHABLE}{error}"))));
                continue;
            }
        };
        let path = remote_path(&controller.spec.data_dir, blueprint::FILE_NAME);
        let copy = match host.read_file(&path).await {
            Ok(Some(bytes)) => String::from_utf8(bytes)
                .map_err(|_| format!("{path} is not UTF-8 text"))
                .and_then(|text| {
                    Blueprint::parse(&text).map_err(|error| format!("{path}: {error}"))
                }),
            Ok(None) => Err(format!("{path} does not exist")),
            Err(error) => Err(error.to_string()),
        };
        copies.push((controller.label(), copy));
    }
    copies.sort_by_key(|(_, copy)| {
        std::cmp::Reverse(
            copy.as_ref()
                .map(|b| (b.audit_log.entries, b.written_at.clone()))
                .unwrap_or_default(),
        )
    });
    copies
}

/// Picks the newest readable blueprint, or explains why there is none.
pub fn newest_blueprint(
    copies: &[(String, Result<Blueprint, String>)],
) -> Result<(String, Blueprint), CliError> {
    copies
        .iter()
        .find_map(|(label, copy)| copy.as_ref().ok().map(|b| (label.clone(), b.clone())))
        .ok_or_else(|| {
            let reasons: Vec<String> = copies
                .iter()
                .filter_map(|(label, copy)| copy.as_ref().err().map(|e| format!("{label}: {e}")))
                .collect();
            let unreachable = |(_, copy): &(String, Result<Blueprint, String>)| {
                copy.as_ref().is_err_and(|e| e.starts_with(UNREACHABLE))
            };
            if copies.iter().all(unreachable) {
                return CliError::failure(anyhow::anyhow!(
                    "no controller could be reached to read the blueprint:\n  {}",
                    reasons.join("\n  ")
                ))
                .help("make a controller reachable and run again");
            }
            CliError::failure(anyhow::anyhow!(
                "no controller holds a readable blueprint{}",
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(":\n  {}", reasons.join("\n  "))
                }
            ))
            .help("airlock apply writes the blueprint onto every controller; run it first")
        })
}

pub async fn run(args: StatusArgs, ui: &Ui) -> CliResult {
    let cluster = args.cluster.load()?;
    let concurrency = usize::from(args.concurrency);
    let hosts = connect_hosts(&cluster, &args.connection, concurrency, |_| true).await?;
    if hosts.iter().all(|host| host.host.is_err()) {
        let reasons: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.host.as_ref().err().map(|e| format!("{}: {e}", h.label())))
            .collect();
        return Err(CliError::failure(anyhow::anyhow!(
            "no host can be reached:\n  {}",
            reasons.join("\n  ")
        ))
        .help("check --known-hosts and the ssh settings in the cluster file"));
    }
    let controllers: Vec<&Connected> = hosts
        .iter()
        .filter(|h| h.spec.role.is_controller())
        .collect();
    let controller_copies: Vec<Connected> = controllers
        .iter()
        .map(|c| Connected {
            spec: c.spec.clone(),
            host: c.host.clone(),
        })
        .collect();
    let copies = fetch_blueprints(&controller_copies).await;
    let (source, blueprint) = newest_blueprint(&copies)?;
    ui.println(&format!(
        "blueprint of cluster {} written {} (from {source}), {}",
        blueprint.cluster.name,
        blueprint.written_at,
        format_count(blueprint.nodes.len(), "node", "nodes")
    ));

    let mut findings = Vec::new();
    for (label, copy) in &copies {
        match copy {
            Ok(copy) if copy.audit_log != blueprint.audit_log => findings.push(Finding {
                host: label.clone(),
                message: format!(
                    "holds an older blueprint (written {}, audit entry {})",
                    copy.written_at, copy.audit_log.entries
                ),
            }),
            Ok(_) => {}
            Err(reason) => findings.push(Finding {
                host: label.clone(),
                message: format!("holds no readable blueprint: {reason}"),
            }),
        }
    }

    let observations = observe(&blueprint, &hosts, concurrency).await;
    // A host marked `reset: true` is expected to be absent from the blueprint.
    let unknown_hosts: Vec<String> = hosts
        .iter()
        .filter(|host| !host.spec.reset)
        .map(Connected::label)
        .filter(|label| !blueprint.nodes.iter().any(|node| node.label() == *label))
        .collect();
    let api = hosts.iter().find(|host| {
        host.spec.role.is_controller()
            && host.host.is_ok()
            && observations
                .values()
                .any(|(label, o)| *label == host.label() && o.as_ref().is_ok_and(|o| o.k0s_running))
    });
    let (api_host, live, cluster_id, readiness) = match api {
        Some(api) => read_cluster(&blueprint, api).await,
        None => (
            controllers.first().map(|c| c.label()).unwrap_or_default(),
            Err("no controller runs k0s".to_string()),
            None,
            BTreeMap::new(),
        ),
    };
    let observed = Observed {
        hosts: &observations,
        api_host: &api_host,
        live: live.as_ref().map_err(Clone::clone),
        cluster_id: cluster_id.as_deref(),
        readiness: &readiness,
        unknown_hosts: &unknown_hosts,
    };
    findings.extend(drift::compare(&blueprint, &observed));
    print_findings(&blueprint, &hosts, &findings)?;
    // A host that cannot be reached is not drift: its state is unknown, so the check failed.
    let unreachable: Vec<String> = hosts
        .iter()
        .filter(|host| host.host.is_err())
        .map(Connected::label)
        .collect();
    if !unreachable.is_empty() {
        return Err(CliError::failure(anyhow::anyhow!(
            "{} could not be checked: {}",
            format_count(unreachable.len(), "host", "hosts"),
            unreachable.join(", ")
        ))
        .help("the findings above cover the hosts that answered; make the other hosts reachable (their connection errors are listed above) and run status again"));
    }
    if findings.is_empty() {
        ui.println("no drift: the cluster matches its blueprint");
        Ok(Status::Success)
    } else {
        let drifted: std::collections::BTreeSet<&str> =
            findings.iter().map(|f| f.host.as_str()).collect();
        ui.println(&format!(
            "drift: {} on {}, listed above",
            format_count(findings.len(), "difference", "differences"),
            format_count(drifted.len(), "host", "hosts")
        ));
        Ok(Status::Drift)
    }
}

/// Reads every blueprint node's host: k0s state and the digests of its files.
async fn observe(
    blueprint: &Blueprint,
    hosts: &[Connected],
    concurrency: usize,
) -> BTreeMap<String, (String, Result<HostObservation, String>)> {
    let work: Vec<_> = blueprint
        .nodes
        .iter()
        .filter_map(|node| {
            let connected = hosts.iter().find(|h| h.label() == node.label())?;
            let paths: Vec<String> = node.files.keys().cloned().collect();
            Some((node.name.clone(), connected, paths))
        })
        .collect();
    stream::iter(work)
        .map(|(name, connected, paths)| async move {
            let label = connected.label();
            let observation = match &connected.host {
                Err(reason) => Err(reason.clone()),
                Ok(host) => {
                    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                    let script = live::observation_script(&connected.spec.k0s_install_path, &paths);
                    match host.run(&script).await {
                        Ok(output) => {
                            live::parse_observation(&output, &paths).map_err(|e| e.to_string())
                        }
                        Err(error) => Err(error.to_string()),
                    }
                }
            };
            (name, (label, observation))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// Asks the API of `api`: the snapshot, the cluster id, policies of kinds the snapshot does not
/// list, and every stack readiness check.
async fn read_cluster(
    blueprint: &Blueprint,
    api: &Connected,
) -> (
    String,
    Result<LiveCluster, String>,
    Option<String>,
    BTreeMap<String, Vec<String>>,
) {
    let label = api.label();
    let host = api.host.as_ref().expect("the API host is connected");
    let paths = K0sPaths {
        binary: &api.spec.k0s_install_path,
        data_dir: &api.spec.data_dir,
    };
    let mut live = match host
        .run_output(&paths.kubectl(&live::snapshot_arguments()))
        .await
    {
        Ok(output) if output.success() => {
            LiveCluster::parse(&output.stdout).map_err(|e| e.to_string())
        }
        Ok(output) => Err(format!("kubectl failed: {}", output.stderr_tail())),
        Err(error) => Err(error.to_string()),
    };
    let cluster_id = host
        .run(&paths.kubectl(live::CLUSTER_ID_ARGUMENTS))
        .await
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    if let Ok(live) = &mut live {
        live.add_other_policies(host, paths, &blueprint.policies)
            .await;
    }
    let mut readiness = BTreeMap::new();
    for stack in &blueprint.stacks {
        let mut problems = Vec::new();
        for check in &stack.readiness {
            let output = host
                .run_output(&paths.kubectl(&check.get_arguments()))
                .await;
            let problem = match output {
                Ok(output) if output.success() => serde_json::from_slice(&output.stdout)
                    .map_err(|error| error.to_string())
                    .map(|object| check.problem(&object))
                    .unwrap_or_else(Some),
                Ok(output) => Some(output.stderr_tail()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(problem) = problem {
                problems.push(format!("{} {}: {problem}", check.kind, check.name));
            }
        }
        if !problems.is_empty() {
            readiness.insert(stack.name.clone(), problems);
        }
    }
    (label, live, cluster_id, readiness)
}

/// Prints each host of the blueprint with its findings, or that it matches.
fn print_findings(
    blueprint: &Blueprint,
    hosts: &[Connected],
    findings: &[Finding],
) -> Result<(), CliError> {
    let mut text = String::new();
    let mut labels: Vec<(String, String)> = blueprint
        .nodes
        .iter()
        .map(|node| (node.label(), node.name.clone()))
        .collect();
    for host in hosts {
        if !labels.iter().any(|(label, _)| *label == host.label()) {
            labels.push((host.label(), "not in the blueprint".to_string()));
        }
    }
    for finding in findings {
        if !labels.iter().any(|(label, _)| *label == finding.host) {
            labels.push((finding.host.clone(), String::new()));
        }
    }
    for (label, name) in labels {
        let own: Vec<&Finding> = findings.iter().filter(|f| f.host == label).collect();
        let title = if name.is_empty() {
            label.clone()
        } else {
            format!("{label} ({name})")
        };
        let unreachable = hosts
            .iter()
            .any(|host| host.label() == label && host.host.is_err());
        if own.is_empty() {
            text.push_str(&format!("{title}: matches the blueprint\n"));
        } else {
            let state = if unreachable { "unreachable" } else { "drift" };
            text.push_str(&format!("{title}: {state}\n"));
            for finding in own {
                text.push_str(&format!("  {label}: {}\n", finding.message));
            }
        }
    }
    print_output(&text)
}
