//! `airlock apply`: bootstrap or complete a cluster from a verified bundle.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "k0sctl.yaml"
    )]
    pub configs: Vec<PathBuf>,
    /// The bundle: a directory, a .tar.zst, or the first part of a split bundle.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Connect and gather facts, then print what would change on each host without changing it.
    #[arg(long)]
    pub dry_run: bool,
    /// The maximum number of hosts worked on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The known_hosts file that host keys are checked against (default: ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Trust and record the host key of a host that known_hosts does not list yet. A changed
    /// key is always rejected.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Accept a bundle without a signature; a warning is logged and recorded.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// The directory that receives the blueprint.
    #[arg(long, value_name = "DIR", default_value = "airlock-out")]
    pub out: PathBuf,
}

pub async fn run(_args: ApplyArgs, _ui: &Ui) -> CliResult {
    Err(CliError::not_implemented("apply"))
}
