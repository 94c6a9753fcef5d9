//! The command line: clap types, and one function per subcommand that turns arguments into calls
//! of the library and chooses the exit status.

mod apply;
mod audit;
mod backup;
mod blueprint;
mod bundle;
mod config;
mod key;
mod kubeconfig;
mod media;
pub mod report;
mod reset;
mod status;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::ui::{Mode, Ui};
pub use report::{CliError, CliResult, Status};

/// Install a sovereign AI cluster on k0s from a signed offline bundle.
///
/// On a connected machine, `airlock bundle build` gathers k0s, container images and Helm charts
/// into a bundle pinned by sha256 and signed with minisign. Inside the site, `airlock apply`
/// verifies every byte, provisions k0s on the hosts over SSH, installs the platform stacks and
/// writes a blueprint of what it installed. `airlock upgrade` rolls the cluster forward from a
/// newer bundle: controllers one at a time, then workers in batches.
#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log more: -v for debug messages that explain decisions, -vv for trace. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, sign, verify, pack and inspect offline bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),

    /// Manage the minisign key pairs that sign bundles.
    #[command(subcommand)]
    Key(key::KeyCommand),

    /// Write a bundle onto removable media and check every byte read back from it.
    #[command(subcommand)]
    Media(media::MediaCommand),

    /// Print a commented example cluster file.
    Init(config::InitArgs),

    /// Check cluster files without connecting to any host.
    #[command(subcommand)]
    Config(config::ConfigCommand),

    /// Install or complete a k0s cluster and its stacks on the hosts of a cluster file.
    Apply(apply::ApplyArgs),

    /// Print the admin kubeconfig of the cluster.
    Kubeconfig(kubeconfig::KubeconfigArgs),

    /// Stop and remove k0s on every host, workers first; asks for confirmation unless --force.
    Reset(reset::ResetArgs),

    /// Save the cluster state with `k0s backup` on the leader, with its sha256 and blueprint.
    Backup(backup::BackupArgs),

    /// Roll a running cluster forward to a newer bundle: controllers one at a time, then workers in
    /// batches.
    Upgrade(upgrade::UpgradeArgs),

    /// Compare the live cluster with its blueprint and report drift (exit status 3).
    ///
    /// Exit status 0 when every host matches its blueprint, 3 when the cluster drifted, and 1
    /// when a host cannot be reached (its state is unknown; the others are still reported).
    Status(status::StatusArgs),

    /// Show the blueprint stored on the cluster's controllers.
    #[command(subcommand)]
    Blueprint(blueprint::BlueprintCommand),

    /// Check the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Parses the command line, runs the subcommand and returns its exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(Mode::detect(cli.quiet, cli.verbose > 0));
    init_logging(&cli, &ui);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            CliError::internal(error)
                .context("cannot start the async runtime")
                .print();
            return Status::Internal.into();
        }
    };
    runtime.spawn(watch_interrupts(ui.clone()));
    match runtime.block_on(dispatch(cli.command, &ui)) {
        Ok(status) => status.into(),
        Err(error) => {
            error.print();
            error.exit_status().into()
        }
    }
}

async fn dispatch(command: Command, ui: &Ui) -> CliResult {
    match command {
        Command::Bundle(command) => bundle::run(command, ui).await,
        Command::Key(command) => key::run(command, ui),
        Command::Media(command) => media::run(command, ui).await,
        Command::Init(args) => config::init(args),
        Command::Config(command) => config::run(command, ui),
        Command::Apply(args) => apply::run(args, ui).await,
        Command::Kubeconfig(args) => kubeconfig::run(args, ui).await,
        Command::Upgrade(args) => upgrade::run(args, ui).await,
        Command::Reset(args) => reset::run(args, ui).await,
        Command::Backup(args) => backup::run(args, ui).await,
        Command::Status(args) => status::run(args, ui).await,
        Command::Blueprint(command) => blueprint::run(command, ui).await,
        Command::Audit(command) => audit::run(command, ui),
    }
}

/// The first Ctrl-C lets the current phase finish and then stops cleanly (locks released); the
/// second ends the process at once. Both exit with status 130, as shells report SIGINT.
async fn watch_interrupts(ui: Ui) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    crate::phase::request_stop();
    ui.warn("interrupted: stopping after the current phase; press Ctrl-C again to abort at once");
    if tokio::signal::ctrl_c().await.is_ok() {
        ui.warn("aborted");
        std::process::exit(130);
    }
}

/// Sends `tracing` output to standard error above the progress bars. The level comes from `-v`
/// and `-q` unless `RUST_LOG` is set.
fn init_logging(cli: &Cli, ui: &Ui) {
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Dependencies log at debug level about every packet; keep them at warn unless RUST_LOG asks.
    let default_filter = format!("warn,airlock={default_level}");
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ui.log_writer())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(cli.verbose > 1)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
