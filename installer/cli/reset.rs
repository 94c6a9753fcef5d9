//! `airlock reset`: stop and remove k0s on every host of a cluster file.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::apply::{ClusterArgs, ConnectionArgs, execute_phases};
use super::{CliError, CliResult, Status};
use crate::bundle::TrustPolicy;
use crate::phase::{self, Run, RunMode, RunSettings};
use crate::ui::{Ui, format_count, format_duration};

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Reset without asking for confirmation; required when standard input is not a terminal.
    #[arg(long)]
    pub force: bool,
    /// Connect and gather facts, then print what would be removed on each host.
    #[arg(long)]
    pub dry_run: bool,
    /// The maximum number of workers reset at once; controllers always go one at a time.
    /// Defaults to spec.options.concurrency.limit of the cluster file, which is 30 unless the
    /// file sets it (0 there means no limit), as in k0sctl.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: Option<u16>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The directory of the audit log that the reset appends to.
    #[arg(long, value_name = "DIR", default_value = "airlock-out")]
    pub out: PathBuf,
}

pub async fn run(args: ResetArgs, ui: &Ui) -> CliResult {
    let cluster = args.cluster.load()?;
    if !args.dry_run && !args.force {
        confirm(&cluster)?;
    }
    let settings = RunSettings {
        mode: RunMode::Reset,
        dry_run: args.dry_run,
        concurrency: cluster
            .options
            .concurrency
            .hosts(args.concurrency, cluster.hosts.len()),
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
    let hosts = cluster.hosts.len();
    let trust = TrustPolicy::new(Vec::new(), false);
    let mut run = Run::new(cluster, None, trust, settings, ui.clone(), "reset");
    let mut phases = phase::reset();
    execute_phases(&mut phases, &mut run, ui, args.dry_run).await?;
    let elapsed = format_duration(ui.elapsed());
    if !args.dry_run {
        ui.println(&format!(
            "==> Finished in {elapsed}: k0s was reset on {}",
            format_count(hosts, "host", "hosts")
        ));
    }
    Ok(Status::Success)
}

/// Asks on the terminal for the cluster's name before anything is deleted.
fn confirm(cluster: &crate::config::Cluster) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(anyhow::anyhow!(
            "reset deletes the cluster's data and needs confirmation, but standard input is not a terminal"
        ))
        .help("pass --force to reset without confirmation"));
    }
    let names: Vec<String> = cluster.hosts.iter().map(|host| host.to_string()).collect();
    eprint!(
        "This stops k0s and deletes its data on {} ({}).\nType the cluster name ({}) to continue: ",
        format_count(names.len(), "host", "hosts"),
        names.join(", "),
        cluster.name
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(CliError::failure)?;
    if answer.trim() != cluster.name {
        return Err(CliError::usage(anyhow::anyhow!(
            "the input {:?} is not the cluster name {:?}, so nothing was reset",
            answer.trim(),
            cluster.name
        )));
    }
    Ok(())
}
