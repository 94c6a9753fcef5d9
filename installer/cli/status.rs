//! `airlock status`: drift between the live cluster and its blueprint.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "k0sctl.yaml"
    )]
    pub configs: Vec<PathBuf>,
    #[command(flatten)]
    pub connection: super::apply::ConnectionArgs,
}

pub async fn run(_args: StatusArgs, _ui: &Ui) -> CliResult {
    Err(CliError::not_implemented("status"))
}
