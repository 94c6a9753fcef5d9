//! `airlock upgrade`: roll a running cluster forward from a newer bundle.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::apply::ClusterArgs;
use super::apply::{ConnectionArgs, execute_phases, trust_policy};
use super::key::load_secret_key;
use super::{CliResult, Status};
use crate::blueprint::SigningKey;
use crate::bundle::Bundle;
use crate::phase::{self, Run, RunMode, RunSettings};
use crate::ui::{Ui, format_duration};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The newer bundle: a directory, a .tar.zst, or the first part of a split bundle. Without
    /// it, the only bundle beside the airlock binary is used, as on media from `airlock media
    /// create`.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Print the upgrade plan and stop before changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// The number of workers upgraded at once; controllers always go one at a time.
    /// Defaults to spec.options.concurrency.workerDisruptionPercent of the workers (10 unless
    /// the file sets it), rounded down, at least one and at most spec.options.concurrency.limit,
    /// as in k0sctl.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    /// Allow a bundle whose version is not newer than the installed one; recorded in the audit
    /// log.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// A trusted minisign public key file, in addition to spec.airlock.bundle.trustedKeys;
    /// repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// How long to wait for an API server or a node to become ready (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = super::apply::parse_duration)]
    pub ready_timeout: Duration,
    /// How long to wait for each stack readiness check, in place of each stack's own limit.
    #[arg(long, value_name = "DURATION", value_parser = super::apply::parse_duration)]
    pub stack_timeout: Option<Duration>,
    /// The directory that receives the updated blueprint, report, SBOM and audit log.
    #[arg(long, value_name = "DIR", default_value = "airlock-out")]
    pub out: PathBuf,
    /// Sign blueprint.yaml and the audit log head with this minisign secret key; its password
    /// is read from AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long, value_name = "KEY")]
    pub sign_blueprint: Option<PathBuf>,
}

pub async fn run(mut args: UpgradeArgs, ui: &Ui) -> CliResult {
    let cluster = args.cluster.load_or_beside_binary(ui)?;
    // An upgrade never accepts an unsigned bundle: the file's allowUnsigned is for first installs
    // in test sites, and an upgrade replaces what a signed bundle installed.
    let mut trust = trust_policy(&cluster, &args.keys, false)?;
    trust.allow_unsigned = false;
    let bundle_path = super::media::bundle_or_beside_binary(args.bundle.as_deref(), ui)?;
    let bundle = Bundle::open(&bundle_path).map_err(super::bundle::verify_error)?;
    let blueprint_key = args
        .sign_blueprint
        .as_deref()
        .map(|path| load_secret_key(path).map(SigningKey::new))
        .transpose()?;
    let settings = RunSettings {
        mode: RunMode::Upgrade {
            allow_downgrade: args.allow_downgrade,
        },
        dry_run: args.dry_run,
        concurrency: cluster.options.concurrency.hosts(None, cluster.hosts.len()),
        known_hosts: args.connection.known_hosts_path()?,
        accept_new_host_keys: args.connection.accept_new_host_keys,
        out_dir: args.out.clone(),
        connect: args.connection.connect_options(),
        ready_timeout: args.ready_timeout,
        stack_timeout: args.stack_timeout,
        blueprint_key,
        restore_from: None,
        prune: false,
    };
    let workers = cluster
        .hosts
        .iter()
        .filter(|host| !host.role.is_controller() && !host.reset)
        .count();
    let worker_batch = cluster
        .options
        .concurrency
        .worker_batch(args.concurrency, workers);
    let mut run = Run::new(
        cluster,
        Some(bundle),
        trust,
        settings,
        ui.clone(),
        "upgrade",
    );
    let mut phases = phase::upgrade(worker_batch);
    execute_phases(&mut phases, &mut run, ui, args.dry_run).await?;

    let elapsed = format_duration(ui.elapsed());
    if !args.dry_run {
        let manifest = run.bundle().manifest();
        ui.println(&format!(
            "==> Finished in {elapsed}: the cluster runs bundle {} version {} with k0s {}",
            manifest.name, manifest.version, manifest.k0s.version
        ));
    }
    Ok(Status::Success)
}
