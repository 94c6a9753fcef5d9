//! `airlock apply`: bootstrap or complete a cluster from a verified bundle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::config::load_error;
use super::key::load_secret_key;
use super::{CliError, CliResult, Status};
use crate::blueprint::SigningKey;
use crate::bundle::{Bundle, PublicKey, TrustPolicy};
use crate::config::Cluster;
use crate::phase::{self, PhaseError, Run, RunMode, RunSettings};
use crate::remote::ConnectOptions;
use crate::ui::{Ui, format_count, format_duration};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The bundle: a directory, a .tar.zst, or the first part of a split bundle. Without it,
    /// the only bundle beside the airlock binary is used, as on media from `airlock media create`.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Connect and gather facts, then print what would change on each host without changing it.
    #[arg(long)]
    pub dry_run: bool,
    /// The maximum number of hosts worked on at once.
    /// Defaults to spec.options.concurrency.limit of the cluster file, which is 30 unless the
    /// file sets it (0 there means no limit), as in k0sctl.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Accept a bundle without a signature; a warning is logged and recorded.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// A trusted minisign public key file, in addition to spec.airlock.bundle.trustedKeys;
    /// repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// How long to wait for an API server or a node to become ready (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How long to wait for each stack readiness check, in place of each stack's own limit
    /// (30 minutes for the GPU Operator, which may compile drivers).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stack_timeout: Option<Duration>,
    /// The directory that receives the blueprint, the report, the SBOM and the audit log.
    #[arg(long, value_name = "DIR", default_value = "airlock-out")]
    pub out: PathBuf,
    /// Sign blueprint.yaml and the audit log head with this minisign secret key; its password
    /// is read from AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long, value_name = "KEY")]
    pub sign_blueprint: Option<PathBuf>,
    /// Restore the cluster state from this `airlock backup` archive before the first controller
    /// starts; checked against the .sha256 file beside it (a missing one gives a warning).
    #[arg(long, value_name = "FILE")]
    pub restore_from: Option<PathBuf>,
    /// Drain, delete and reset the nodes that the stored blueprint records but the cluster file
    /// no longer lists.
    #[arg(long)]
    pub prune: bool,
}

/// The cluster files; shared by every command that works on a cluster.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin
    /// [default: k0sctl.yaml].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
}

/// The cluster file read when no `-c` is given.
const DEFAULT_CLUSTER_FILE: &str = "k0sctl.yaml";

impl ClusterArgs {
    /// Loads and validates the cluster files, reporting problems as usage errors.
    pub fn load(&self) -> Result<Cluster, CliError> {
        Cluster::load(&self.paths()).map_err(load_error)
    }

    /// Returns the cluster files given with `-c`, or `k0sctl.yaml`.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self.configs.is_empty() {
            true => vec![PathBuf::from(DEFAULT_CLUSTER_FILE)],
            false => self.configs.clone(),
        }
    }

    /// Loads the cluster files like [`ClusterArgs::load`], but without `-c` it takes the
    /// `k0sctl.yaml` beside the airlock binary first, as on media from `airlock media create`,
    /// and prints which one it picked. The chosen file is stored in `configs`.
    pub fn load_or_beside_binary(&mut self, ui: &Ui) -> Result<Cluster, CliError> {
        if self.configs.is_empty()
            && let Some(path) = crate::media::find_beside_binary().and_then(|found| found.cluster)
        {
            ui.println(&format!(
                "using the cluster file {} beside the airlock binary",
                path.display()
            ));
            self.configs = vec![path];
        }
        self.load()
    }
}

/// How airlock reaches the hosts; shared by every command that connects.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// The known_hosts file that host keys are checked against (default: ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the host key of a host that known_hosts does not list yet. A changed
    /// key is always rejected.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// The limit for connecting to one host, per attempt (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

impl ConnectionArgs {
    /// Returns the known_hosts file. A file named with `--known-hosts` must exist, unless
    /// `--accept-new-host-keys` may start it in a folder that exists. So a mistyped path is
    /// reported rather than read as an empty list or created in new folders.
    pub fn known_hosts_path(&self) -> Result<PathBuf, CliError> {
        let Some(path) = &self.known_hosts else {
            return Ok(std::env::home_dir()
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".ssh/known_hosts"));
        };
        if path.exists() {
            return Ok(path.clone());
        }
        let folder = match path.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => Path::new("/"),
        };
        if self.accept_new_host_keys && folder.is_dir() {
            return Ok(path.clone());
        }
        Err(CliError::usage(anyhow::anyhow!(
            "known_hosts file {} not found",
            path.display()
        ))
        .help(if self.accept_new_host_keys {
            format!(
                "create the folder {} first, or fix the path",
                folder.display()
            )
        } else {
            "fix the path, or add --accept-new-host-keys to start a new file".to_string()
        }))
    }

    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            timeout: self.connect_timeout,
            ..ConnectOptions::default()
        }
    }
}

/// Parses a duration such as 90s, 10m or 1h30m; zero is rejected because every duration airlock
/// takes is a time limit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "{text:?} is zero; give a time limit such as 30s or 5m"
        )),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!(
            "invalid duration {text:?} ({error}); write a number and a unit such as 30s, 5m or 1h"
        )),
    }
}

pub async fn run(mut args: ApplyArgs, ui: &Ui) -> CliResult {
    let cluster = args.cluster.load_or_beside_binary(ui)?;
    let trust = trust_policy(&cluster, &args.keys, args.allow_unsigned)?;
    // The archive is read and checked before any host is touched.
    if let Some(path) = &args.restore_from {
        phase::read_restore_source(path).map_err(|error| {
            CliError::usage(error).help(
                "pass the archive that `airlock backup` wrote, with its .sha256 file beside it",
            )
        })?;
    }
    let bundle_path = super::media::bundle_or_beside_binary(args.bundle.as_deref(), ui)?;
    let bundle = Bundle::open(&bundle_path).map_err(super::bundle::verify_error)?;
    // The key is loaded first, so that a wrong password fails before any host is touched.
    let blueprint_key = args
        .sign_blueprint
        .as_deref()
        .map(|path| load_secret_key(path).map(SigningKey::new))
        .transpose()?;
    let settings = RunSettings {
        mode: RunMode::Apply,
        dry_run: args.dry_run,
        concurrency: cluster
            .options
            .concurrency
            .hosts(args.concurrency, cluster.hosts.len()),
        known_hosts: args.connection.known_hosts_path()?,
        accept_new_host_keys: args.connection.accept_new_host_keys,
        out_dir: args.out.clone(),
        connect: args.connection.connect_options(),
        ready_timeout: args.ready_timeout,
        stack_timeout: args.stack_timeout,
        blueprint_key,
        restore_from: args.restore_from.clone(),
        prune: args.prune,
    };
    let description = node_summary(&cluster);
    let mut run = Run::new(cluster, Some(bundle), trust, settings, ui.clone(), "apply");
    let mut phases = phase::apply();
    execute_phases(&mut phases, &mut run, ui, args.dry_run).await?;

    let elapsed = format_duration(ui.elapsed());
    if !args.dry_run {
        ui.println(&format!(
            "==> Finished in {elapsed}: k0s {} runs on {description}",
            run.bundle().manifest().k0s.version
        ));
        let mut next: Vec<String> = args
            .cluster
            .paths()
            .iter()
            .map(|c| format!("-c {}", c.display()))
            .collect();
        if let Some(known_hosts) = &args.connection.known_hosts {
            next.push(format!("--known-hosts {}", known_hosts.display()));
        }
        ui.println(&format!(
            "next: airlock kubeconfig {} > kubeconfig",
            next.join(" ")
        ));
    }
    Ok(Status::Success)
}

/// Describes the hosts of a cluster: `3 nodes (1 controller, 2 workers)`.
fn node_summary(cluster: &Cluster) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    // Hosts marked `reset: true` leave the cluster during the run.
    let members: Vec<_> = cluster.hosts.iter().filter(|host| !host.reset).collect();
    for host in &members {
        let role = host.role.as_str();
        match counts.iter_mut().find(|(name, _)| *name == role) {
            Some((_, count)) => *count += 1,
            None => counts.push((role, 1)),
        }
    }
    let roles: Vec<String> = counts
        .into_iter()
        .map(|(role, count)| format_count(count, role, &format!("{role}s")))
        .collect();
    format!(
        "{} ({})",
        format_count(members.len(), "host", "hosts"),
        roles.join(", ")
    )
}

/// Builds the trust policy from the cluster file's pinned keys and `--key` files.
pub fn trust_policy(
    cluster: &Cluster,
    key_files: &[PathBuf],
    allow_unsigned: bool,
) -> Result<TrustPolicy, CliError> {
    let mut keys = Vec::new();
    for trusted in &cluster.airlock.bundle.trusted_keys {
        let source = trusted.path.as_ref().map_or_else(
            || "spec.airlock.bundle.trustedKeys".to_string(),
            |path| path.display().to_string(),
        );
        let key = PublicKey::parse(&trusted.key, &source)
            .map_err(|reason| CliError::usage(anyhow::anyhow!(reason)))?;
        keys.push(key);
    }
    for path in key_files {
        keys.push(PublicKey::load(path).map_err(CliError::usage)?);
    }
    let allow_unsigned = allow_unsigned || cluster.airlock.bundle.allow_unsigned;
    if allow_unsigned {
        tracing::warn!("unsigned bundles are allowed for this run");
    }
    Ok(TrustPolicy::new(keys, allow_unsigned))
}

/// Runs a command's phases, or their dry-run forms. A failure is recorded in the audit log
/// (outside a dry run) and reported, and a finished dry run prints that nothing changed.
pub async fn execute_phases(
    phases: &mut [Box<dyn phase::Phase<Run>>],
    run: &mut Run,
    ui: &Ui,
    dry_run: bool,
) -> Result<(), CliError> {
    if let Err(error) = phase::run_phases(phases, run, ui, dry_run).await {
        if !dry_run {
            phase::record_failure(run, &error).await;
        }
        return Err(phase_error(error));
    }
    if dry_run {
        ui.println(&format!(
            "==> Dry run finished in {}; nothing was changed",
            format_duration(ui.elapsed())
        ));
    }
    Ok(())
}

/// Reports a failed phase: which phase, every host's error, and what to do.
pub fn phase_error(error: PhaseError) -> CliError {
    let PhaseError { phase, error, help } = error;
    let error = match error.downcast_ref::<crate::phase::Interrupted>() {
        Some(_) => CliError::failure(error)
            .context(format!("stopped before phase \"{phase}\""))
            .status(Status::Interrupted),
        None => CliError::failure(error).context(format!("phase \"{phase}\" failed")),
    };
    error.maybe_help(help)
}
