//! `airlock media`: writing a bundle onto removable media for the trip into the site.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Copy a bundle, the airlock binary and the trusted keys onto mounted media, then read every
    /// byte back and check it.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory to copy.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The mount point of the media.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Split the packed bundle into parts of at most this size (for example 4GiB for FAT32).
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
}

pub async fn run(command: MediaCommand, _ui: &Ui) -> CliResult {
    match command {
        MediaCommand::Create(_) => Err(CliError::not_implemented("media create")),
    }
}
