//! `airlock kubeconfig`: the admin kubeconfig of the cluster.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "k0sctl.yaml"
    )]
    pub configs: Vec<PathBuf>,
    /// The known_hosts file that host keys are checked against (default: ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

pub async fn run(_args: KubeconfigArgs, _ui: &Ui) -> CliResult {
    Err(CliError::not_implemented("kubeconfig"))
}
