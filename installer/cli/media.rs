//! `airlock media`: writing a bundle onto removable media for the trip into the site, and
//! checking media before use.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::key::load_secret_key;
use super::{CliError, CliResult, Status};
use crate::bundle::PublicKey;
use crate::bundle::archive::parse_size;
use crate::media::{self, MediaError, MediaOptions, MediaVerifyError, Target};
use crate::ui::{Ui, format_bytes, format_count, format_duration};

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Write a verified bundle, the airlock binary, the trusted keys, the cluster file,
    /// INSTALL.txt and a signed SHA256SUMS onto mounted media or into a disk image, then read
    /// every byte back and check it. An interrupted run continues where it stopped.
    Create(CreateArgs),
    /// Hash every file on media again against SHA256SUMS, check its signature and the bundle's
    /// own digests, and report the first bad file.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory to copy.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The mount point of the media, or any folder. It must be empty or contain media of an
    /// interrupted run.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "to",
        value_name = "DIR",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub output: Option<PathBuf>,
    /// Write a raw disk image with one FAT32 partition instead, for dd or an image writer.
    #[arg(long, value_name = "FILE.img", requires = "size")]
    pub image: Option<PathBuf>,
    /// The size of the disk image (for example 16GiB); at most the size of the stick.
    #[arg(long, value_name = "SIZE", requires = "image")]
    pub size: Option<String>,
    /// The cluster file to put on the media as k0sctl.yaml.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Split the packed bundle into parts of at most this size (for example 2GiB). On FAT32
    /// and in disk images, parts are at most 4 GiB - 1 byte without this option.
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
    /// A trusted minisign public key: the bundle must be signed by one of them, and each is
    /// copied into the media root as NAME.pub; repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Sign SHA256SUMS with this minisign secret key; its password is read from
    /// AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// Accept an unsigned bundle; a warning is logged.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The media folder or a disk image made by `media create --image`.
    #[arg(value_name = "DIR|FILE.img")]
    pub media: PathBuf,
    /// A trusted minisign public key for the signature of SHA256SUMS; repeat for several keys.
    /// Without it the keys on the media are used, which detects damage but not tampering.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
}

pub async fn run(command: MediaCommand, ui: &Ui) -> CliResult {
    match command {
        MediaCommand::Create(args) => create(args, ui).await,
        MediaCommand::Verify(args) => verify(args, ui).await,
    }
}

fn parse_size_arg(option: &str, text: Option<&str>) -> Result<Option<u64>, CliError> {
    text.map(parse_size)
        .transpose()
        .map_err(|reason| CliError::usage(anyhow::anyhow!("invalid {option}: {reason}")))
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<(PathBuf, PublicKey)>, CliError> {
    let mut keys = Vec::new();
    for path in paths {
        keys.push((
            path.clone(),
            PublicKey::load(path).map_err(CliError::usage)?,
        ));
    }
    Ok(keys)
}

async fn create(args: CreateArgs, ui: &Ui) -> CliResult {
    let split_size = parse_size_arg("--split-size", args.split_size.as_deref())?;
    let image_size = parse_size_arg("--size", args.size.as_deref())?;
    let keys = load_keys(&args.keys)?;
    // The key is loaded first, so that a wrong password fails before minutes of copying.
    let sign = args.sign.as_deref().map(load_secret_key).transpose()?;
    if !args.bundle.is_dir() {
        let fix = match args.bundle.exists() {
            true => format!(
                "media create packs a bundle directory; unpack this archive first with `airlock bundle unpack {} -o DIR`",
                args.bundle.display()
            ),
            false => "pass the directory that `airlock bundle build` wrote".to_string(),
        };
        return Err(CliError::usage(anyhow::anyhow!(
            "--bundle {} is not a bundle directory",
            args.bundle.display()
        ))
        .help(fix));
    }
    if let Some(cluster) = &args.cluster
        && !cluster.is_file()
    {
        return Err(CliError::usage(anyhow::anyhow!(
            "the cluster file {} does not exist",
            cluster.display()
        ))
        .help("pass the k0sctl.yaml of the site with -c"));
    }
    let (target, destination) = match (&args.output, &args.image, image_size) {
        (_, Some(path), Some(size)) => (Target::Image { path, size }, path.as_path()),
        (Some(dir), _, _) => (Target::Folder(dir), dir.as_path()),
        _ => unreachable!("clap requires --output or --image with --size"),
    };
    let options = MediaOptions {
        bundle: &args.bundle,
        target,
        cluster: args.cluster.as_deref(),
        split_size,
        keys,
        allow_unsigned: args.allow_unsigned,
        sign: sign.as_ref(),
    };
    if sign.is_none() {
        ui.warn(
            "SHA256SUMS will not be signed (no --sign): media verify then detects damage but not \
             replaced media; the bundle keeps its own signature",
        );
    }
    let summary = tokio::task::block_in_place(|| media::create(&options, ui)).map_err(|error| {
        let help = match &error {
            MediaError::ReadBack { .. } => {
                Some("the media returned other bytes than were written: use other media")
            }
            MediaError::Write { .. } => Some(
                "check that the media is mounted writable and has room, then run the same \
                 command again: it continues where it stopped",
            ),
            MediaError::NotEmpty { .. } => {
                Some("check it with `airlock media verify`, or pass the mount point of empty media")
            }
            MediaError::NotADirectory { .. } | MediaError::ForeignFile { .. } => {
                Some("pass the mount point of empty media")
            }
            MediaError::SplitTooLarge { .. } => Some("pass --split-size 4095MiB or less"),
            MediaError::ImageSize { .. } => {
                Some("pass --size with at least 40MiB, for example 16GiB")
            }
            MediaError::Interrupted => {
                Some("run the same command again to continue where it stopped")
            }
            MediaError::ImageWrite { .. } => Some(
                "when the image is full, pass a larger --size and run again: the files already \
                 staged beside the image are kept",
            ),
            _ => None,
        };
        let usage = matches!(
            error,
            MediaError::SplitTooLarge { .. }
                | MediaError::ImageSize { .. }
                | MediaError::ImageExists { .. }
        );
        let interrupted = matches!(error, MediaError::Interrupted);
        let error = match (usage, interrupted) {
            (true, _) => CliError::usage(error),
            (false, true) => CliError::failure(error).status(Status::Interrupted),
            (false, false) => CliError::failure(error),
        };
        error.maybe_help(help)
    })?;

    let total: u64 = summary.files.iter().map(|(_, size, _)| size).sum();
    let skipped = match summary.skipped.len() {
        0 => String::new(),
        count => format!(" ({count} already complete from an earlier run)"),
    };
    ui.println(&format!(
        "==> Finished in {}: {}, {} written to {} and read back{skipped}",
        format_duration(ui.elapsed()),
        format_count(summary.files.len(), "file", "files"),
        format_bytes(total),
        destination.display()
    ));
    if let Some(split) = summary.split_size {
        ui.println(&format!(
            "the bundle is split into parts of at most {}",
            format_bytes(split)
        ));
    }
    ui.println(&format!(
        "inside the site: ./airlock media verify . && ./airlock apply  (see {})",
        media::INSTALL
    ));
    Ok(Status::Success)
}

async fn verify(args: VerifyArgs, ui: &Ui) -> CliResult {
    let keys: Vec<PublicKey> = load_keys(&args.keys)?
        .into_iter()
        .map(|(_, key)| key)
        .collect();
    if !args.media.exists() {
        return Err(
            CliError::usage(anyhow::anyhow!("{} does not exist", args.media.display()))
                .help("pass the mount point of the media or a .img file"),
        );
    }
    let options = media::VerifyOptions { image_bundle: true };
    let report = tokio::task::block_in_place(|| media::verify(&args.media, &keys, options, ui))
        .map_err(|error| {
            let help = match &error {
                MediaVerifyError::Corrupt { .. } | MediaVerifyError::Missing { .. } => {
                    Some("the media is damaged: write it again with `airlock media create`")
                }
                MediaVerifyError::Extra { .. } => {
                    Some("remove the file if you put it there, or write the media again")
                }
                MediaVerifyError::BadSignature { .. } | MediaVerifyError::UntrustedKey { .. } => {
                    Some("do not use this media: it was not signed by a trusted key")
                }
                MediaVerifyError::Unsigned => Some(
                    "media written without --sign has an unsigned SHA256SUMS; verify it with \
                     the bundle's own signature instead: airlock bundle verify PART --key KEY",
                ),
                _ => None,
            };
            let error = CliError::failure(error);
            error.maybe_help(help)
        })?;
    let signed = match (report.signer, report.keys_from_media) {
        (Some(key), false) => format!("signed by trusted key {key}"),
        (Some(key), true) => format!("signed by key {key} from the media"),
        (None, _) => "not signed".to_string(),
    };
    let bundle = match report.bundle_checked {
        true => format!("bundle {} verified", report.bundle),
        false => format!("bundle {} checked through SHA256SUMS", report.bundle),
    };
    ui.println(&format!(
        "==> {} verified in {}: {}, {}, {signed}, {bundle}",
        display(&args.media),
        format_duration(ui.elapsed()),
        format_count(report.files, "file", "files"),
        format_bytes(report.bytes)
    ));
    Ok(Status::Success)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Returns `--bundle`, or without it the only bundle beside the airlock binary, and prints
/// which one it picked.
pub fn bundle_or_beside_binary(bundle: Option<&Path>, ui: &Ui) -> Result<PathBuf, CliError> {
    if let Some(path) = bundle {
        return Ok(path.to_path_buf());
    }
    let found = media::find_beside_binary().unwrap_or_default();
    match found.bundles.as_slice() {
        [path] => {
            ui.println(&format!(
                "using the bundle {} beside the airlock binary",
                path.display()
            ));
            Ok(path.clone())
        }
        [] => Err(CliError::usage(anyhow::anyhow!(
            "no --bundle given, and no bundle (*.tar.zst or *.tar.zst.part001) is beside the \
             airlock binary in {}",
            found.dir.display()
        ))
        .help("pass --bundle, or run the airlock binary on the media")),
        several => Err(CliError::usage(anyhow::anyhow!(
            "no --bundle given, and {} bundles are beside the airlock binary: {}",
            several.len(),
            several
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .help("pass --bundle with the one to use")),
    }
}
