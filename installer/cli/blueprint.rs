//! `airlock blueprint`: the as-built record stored on the controllers.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum BlueprintCommand {
    /// Print the blueprint stored on the cluster's controllers.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "k0sctl.yaml"
    )]
    pub configs: Vec<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = DocumentFormat::Yaml)]
    pub output: DocumentFormat,
    #[command(flatten)]
    pub connection: super::apply::ConnectionArgs,
}

/// The format of a document printed on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocumentFormat {
    Yaml,
    Json,
}

pub async fn run(command: BlueprintCommand, _ui: &Ui) -> CliResult {
    match command {
        BlueprintCommand::Show(_) => Err(CliError::not_implemented("blueprint show")),
    }
}
