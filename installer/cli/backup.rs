//! `airlock backup`: save the cluster state with `k0s backup` on the leader.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::apply::{ClusterArgs, ConnectionArgs, execute_phases};
use super::{CliError, CliResult, Status};
use crate::bundle::TrustPolicy;
use crate::phase::{self, Run, RunMode, RunSettings};
use crate::ui::{Ui, format_duration};

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The directory that receives the archive, its .sha256 file, the blueprint and the audit
    /// log.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Connect and gather facts, then print what would be saved.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub async fn run(args: BackupArgs, ui: &Ui) -> CliResult {
    let mut cluster = args.cluster.load()?;
    if args.out.exists() && !args.out.is_dir() {
        return Err(CliError::usage(anyhow::anyhow!(
            "--out {} is a file, not a directory",
            args.out.display()
        ))
        .help(
            "pass a directory for the archive, its .sha256 file, the blueprint and the audit log",
        ));
    }
    // A backup runs on the leader and updates the audit log on the controllers, so a worker
    // that is down does not stop it.
    cluster.hosts.retain(|host| host.role.is_controller());
    let settings = RunSettings {
        mode: RunMode::Backup,
        dry_run: args.dry_run,
        concurrency: 10,
        known_hosts: args.connection.known_hosts_path()?,
        accept_new_host_keys: args.connection.accept_new_host_keys,
        out_dir: args.out.clone(),
        connect: args.connection.connect_options(),
        ready_timeout: Duration::from_secs(60),
        stack_timeout: None,
        blueprint_key: None,
        restore_from: None,
        prune: false,
    };
    let trust = TrustPolicy::new(Vec::new(), false);
    let mut run = Run::new(cluster, None, trust, settings, ui.clone(), "backup");
    let mut phases = phase::backup();
    execute_phases(&mut phases, &mut run, ui, args.dry_run).await?;
    let elapsed = format_duration(ui.elapsed());
    if !args.dry_run {
        ui.println(&format!(
            "==> Finished in {elapsed}: the backup is in {}",
            args.out.display()
        ));
        ui.println("next: restore it on fresh hosts with `airlock apply --restore-from <archive>`");
    }
    Ok(Status::Success)
}
