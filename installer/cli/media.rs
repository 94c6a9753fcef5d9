//! `airlock media`: writing a bundle onto removable media for the trip into the site.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, CliResult, Status};
use crate::bundle::PublicKey;
use crate::bundle::archive::parse_size;
use crate::media::{self, MediaError, MediaOptions};
use crate::ui::{Ui, format_bytes, format_duration};

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Pack a verified bundle onto mounted media with the airlock binary and the trusted keys,
    /// then read every byte back from the media and check it.
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory to copy.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The mount point of the media; it must not hold airlock media already.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Split the packed bundle into parts of at most this size (for example 4GiB for FAT32).
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
    /// A trusted minisign public key: the bundle must be signed by one of them, and each is
    /// copied onto the media; repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Accept an unsigned bundle; a warning is logged.
    #[arg(long)]
    pub allow_unsigned: bool,
}

pub async fn run(command: MediaCommand, ui: &Ui) -> CliResult {
    let MediaCommand::Create(args) = command;
    let split_size = args
        .split_size
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|reason| CliError::usage(anyhow::anyhow!(reason)))?;
    let mut keys = Vec::new();
    for path in &args.keys {
        keys.push((
            path.clone(),
            PublicKey::load(path).map_err(CliError::usage)?,
        ));
    }
    let options = MediaOptions {
        bundle: &args.bundle,
        to: &args.to,
        split_size,
        keys,
        allow_unsigned: args.allow_unsigned,
    };
    let summary = tokio::task::block_in_place(|| media::create(&options, ui)).map_err(|error| {
        let help = match &error {
            MediaError::ReadBack { .. } => {
                "the media returned other bytes than were written: use other media"
            }
            MediaError::Write { .. } => "check that the media is mounted writable and has room",
            MediaError::NotEmpty { .. } | MediaError::NotADirectory { .. } => {
                "pass the mount point of empty media"
            }
            _ => "see the cause above",
        };
        CliError::failure(error).help(help)
    })?;
    let total: u64 = summary.files.iter().map(|(_, size, _)| size).sum();
    ui.println(&format!(
        "==> Finished in {}: {} files, {} written to {} and read back",
        format_duration(ui.elapsed()),
        summary.files.len(),
        format_bytes(total),
        args.to.display()
    ));
    ui.println(&format!(
        "inside the site: {}/airlock bundle verify {}",
        args.to.display(),
        summary.archive.display()
    ));
    Ok(Status::Success)
}
