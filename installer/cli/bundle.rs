//! `airlock bundle`: build, sign, verify, pack, unpack and inspect offline bundles.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, CliResult};
use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a bundle directory from a bundle specification.
    Build(BuildArgs),
    /// Sign a bundle's bundle.yaml with a minisign secret key.
    Sign(SignArgs),
    /// Check a bundle's signature against trusted keys, then re-hash every blob.
    Verify(VerifyArgs),
    /// Pack a bundle directory into one .tar.zst file, optionally split into parts.
    Pack(PackArgs),
    /// Unpack a packed bundle (a .tar.zst or the first part of a split bundle) into a directory.
    Unpack(UnpackArgs),
    /// Print a bundle's name, versions, stacks and every artifact with its size and digest.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The bundle specification (YAML); artifact paths in it are relative to its directory.
    pub spec: PathBuf,
    /// The bundle directory to write; created if missing.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Sign the bundle with this minisign secret key once it is built.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The minisign secret key; its password is read from AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long, value_name = "KEY")]
    pub secret_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A bundle directory, a .tar.zst, or the first part of a split bundle.
    pub bundle: PathBuf,
    /// A trusted minisign public key file; repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Accept a bundle without a signature; a warning is logged.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The archive to write, conventionally FILE.tar.zst.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Split the archive into parts of at most this size (for example 4GiB, 700MiB).
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// A .tar.zst, or the first part of a split bundle.
    pub file: PathBuf,
    /// The directory to unpack into; it must be empty or missing.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A bundle directory, a .tar.zst, or the first part of a split bundle.
    pub bundle: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The format of a command's report on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

pub async fn run(command: BundleCommand, _ui: &Ui) -> CliResult {
    let name = match command {
        BundleCommand::Build(_) => "bundle build",
        BundleCommand::Sign(_) => "bundle sign",
        BundleCommand::Verify(_) => "bundle verify",
        BundleCommand::Pack(_) => "bundle pack",
        BundleCommand::Unpack(_) => "bundle unpack",
        BundleCommand::Inspect(_) => "bundle inspect",
    };
    Err(CliError::not_implemented(name))
}
