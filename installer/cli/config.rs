//! `airlock init` and `airlock config`: writing and checking cluster files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Args)]
pub struct InitArgs {}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate cluster files as apply would, without connecting to any host.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A cluster file in k0sctl's format; repeat to combine several files, `-` reads stdin.
    #[arg(short = 'c', long = "config", value_name = "FILE", required = true)]
    pub configs: Vec<PathBuf>,
}

pub fn init(_args: InitArgs) -> CliResult {
    Err(CliError::not_implemented("init"))
}

pub fn run(command: ConfigCommand, _ui: &Ui) -> CliResult {
    match command {
        ConfigCommand::Validate(_) => Err(CliError::not_implemented("config validate")),
    }
}
