//! `airlock upgrade`: roll a running cluster forward from a newer bundle.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "k0sctl.yaml"
    )]
    pub configs: Vec<PathBuf>,
    /// The newer bundle: a directory, a .tar.zst, or the first part of a split bundle.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Print the upgrade plan and stop before changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// The number of workers upgraded at once; controllers always go one at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Allow a bundle whose version is not newer than the installed one; recorded in the audit
    /// log.
    #[arg(long)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub connection: super::apply::ConnectionArgs,
    /// The directory that receives the updated blueprint.
    #[arg(long, value_name = "DIR", default_value = "airlock-out")]
    pub out: PathBuf,
}

pub async fn run(_args: UpgradeArgs, _ui: &Ui) -> CliResult {
    Err(CliError::not_implemented("upgrade"))
}
