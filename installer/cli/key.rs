//! `airlock key`: minisign key pairs for signing bundles.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new minisign key pair: PREFIX.pub and PREFIX.key.
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the pair: PREFIX.pub (public) and PREFIX.key (secret).
    #[arg(short, long, value_name = "PREFIX")]
    pub output: PathBuf,
    /// Store the secret key without a password. Without this flag the password is read from
    /// AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long)]
    pub unencrypted: bool,
}

pub fn run(command: KeyCommand, _ui: &Ui) -> CliResult {
    match command {
        KeyCommand::Generate(_) => Err(CliError::not_implemented("key generate")),
    }
}
