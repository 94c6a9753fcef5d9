//! `airlock bundle`: build, sign, verify, pack, unpack and inspect offline bundles.

use super::report::print_output;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::key::{key_error, load_secret_key};
use super::{CliError, CliResult, Status};
use crate::bundle::archive::{self, PackError, PackOptions, PartError, UnpackError};
use crate::bundle::{
    self, BuildError, BuildOptions, Bundle, BundleInspection, Credentials, FetchError,
    NetworkOptions, PinOrigin, PublicKey, SignError, SignatureError, TransferSummary, TrustPolicy,
    VerifiedBundle, VerifyError,
};
use crate::digest::Digest;
use crate::ui::{Ui, format_bytes, format_count, format_duration};

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
    /// The bundle directory to write: a missing or empty directory, or the output of an earlier
    /// build, whose blobs are reused.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Sign the bundle with this minisign secret key once it is built.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// The number of downloads that run at a time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Build only sources that the specification or its lock file pins, and leave the lock file
    /// unchanged.
    #[arg(long)]
    pub frozen: bool,
    /// A PEM file of CA certificates to trust besides the system's, such as an inspecting
    /// proxy's; repeat for several files.
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub ca_certs: Vec<PathBuf>,
    /// The Docker-style config.json with registry credentials [default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json, if it exists].
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The minisign secret key; its password is read from AIRLOCK_KEY_PASSWORD or a prompt.
    #[arg(long, value_name = "KEY")]
    pub secret_key: PathBuf,
}

/// The trust policy flags shared by every command that reads a bundle.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// A trusted minisign public key file; repeat for several keys.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Accept a bundle without a signature, and a signed one when no --key is given without
    /// checking its signature; a warning is logged. A signature by a key other than the --key
    /// keys is still rejected.
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    fn policy(&self) -> Result<TrustPolicy, CliError> {
        let keys = self
            .keys
            .iter()
            .map(|path| PublicKey::load(path))
            .collect::<Result<Vec<_>, _>>();
        Ok(TrustPolicy::new(
            keys.map_err(key_error)?,
            self.allow_unsigned,
        ))
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A bundle directory, a .tar.zst, or the first part of a split bundle.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The archive to write, conventionally FILE.tar.zst; parts are named FILE.tar.zst.part001...
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Split the archive into parts of at most this size (for example 4GiB, 700MiB; at least
    /// 128KiB).
    #[arg(long, value_name = "SIZE")]
    pub split_size: Option<String>,
    /// The zstd compression level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// A .tar.zst, or the first part of a split bundle.
    pub file: PathBuf,
    /// The directory to unpack into; it must be empty or missing.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
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

pub async fn run(command: BundleCommand, ui: &Ui) -> CliResult {
    let ui = ui.clone();
    // Hashing, compression and archive work block; they run on a blocking thread.
    tokio::task::spawn_blocking(move || match command {
        BundleCommand::Build(args) => build(args, &ui),
        BundleCommand::Sign(args) => sign(args, &ui),
        BundleCommand::Verify(args) => verify(args, &ui),
        BundleCommand::Pack(args) => pack(args, &ui),
        BundleCommand::Unpack(args) => unpack(args, &ui),
        BundleCommand::Inspect(args) => inspect(args),
    })
    .await
    .map_err(|error| CliError::internal(error).context("a bundle command panicked"))?
}

fn build(args: BuildArgs, ui: &Ui) -> CliResult {
    // The key is loaded first, so a wrong password fails before minutes of copying.
    let key = args.sign.as_deref().map(load_secret_key).transpose()?;
    ui.header(&format!("Build bundle from {}", args.spec.display()));
    let credentials = registry_credentials(args.registry_auth.as_deref())?;
    let options = BuildOptions {
        network: NetworkOptions {
            jobs: usize::from(args.jobs),
            ca_certs: args.ca_certs.clone(),
            credentials,
        },
        frozen: args.frozen,
    };
    let summary = bundle::build(&args.spec, &args.output, options, ui).map_err(build_error)?;
    let manifest = &summary.manifest;
    if let Some(key) = &key {
        bundle::sign(&args.output, key).map_err(sign_error)?;
    }
    ui.println(&format!(
        "built bundle {} version {} in {}: {} artifacts, {} blobs, {}\ndigest {}{}",
        manifest.name,
        manifest.version,
        args.output.display(),
        manifest.artifacts.len(),
        manifest.blobs.len(),
        format_bytes(manifest.total_size()),
        summary.digest,
        match &key {
            Some(key) => format!(", signed by key {}", key.id()),
            None => String::new(),
        }
    ));
    ui.println(&describe_transfer(&summary.transfer, &args.output));
    if let Some(lock) = &summary.lock_written {
        ui.println(&format!(
            "recorded the digests of unpinned downloads in {}; commit it with the specification",
            lock.display()
        ));
    }
    let next = match key {
        Some(_) => format!(
            "airlock bundle pack {} -o {}.tar.zst",
            args.output.display(),
            manifest.name
        ),
        None => format!(
            "airlock bundle sign {} --secret-key KEY",
            args.output.display()
        ),
    };
    ui.println(&format!("next: {next}"));
    Ok(Status::Success)
}

/// Describes where a build's blobs came from, such as `copied 2 local files (1.5 MiB), reused
/// 3 blobs (20.0 MiB) from bundle, downloaded 1 blob (100.0 KiB)`. Sources a build did not use
/// are left out.
fn describe_transfer(transfer: &TransferSummary, output: &Path) -> String {
    let mut parts = Vec::new();
    let mut copied = Vec::new();
    if transfer.copied_files > 0 {
        copied.push(format_count(
            transfer.copied_files as usize,
            "local file",
            "local files",
        ));
    }
    if transfer.copied_images > 0 {
        copied.push(format_count(
            transfer.copied_images as usize,
            "image from a local OCI layout",
            "images from local OCI layouts",
        ));
    }
    if !copied.is_empty() {
        parts.push(format!(
            "copied {} ({})",
            copied.join(" and "),
            format_bytes(transfer.copied_bytes)
        ));
    }
    if transfer.reused_blobs > 0 {
        parts.push(format!(
            "reused {} ({}) from {}",
            format_count(transfer.reused_blobs as usize, "blob", "blobs"),
            format_bytes(transfer.reused_bytes),
            output.display()
        ));
    }
    if transfer.downloaded_blobs > 0 {
        let continued = match transfer.continued_bytes {
            0 => String::new(),
            bytes => format!(", plus {} kept from partial downloads", format_bytes(bytes)),
        };
        parts.push(format!(
            "downloaded {} ({}{continued})",
            format_count(transfer.downloaded_blobs as usize, "blob", "blobs"),
            format_bytes(transfer.downloaded_bytes)
        ));
    }
    if parts.is_empty() {
        return "copied, reused and downloaded nothing".to_string();
    }
    parts.join(", ")
}

fn sign(args: SignArgs, ui: &Ui) -> CliResult {
    if !args.bundle.is_dir() {
        return Err(CliError::usage(anyhow::anyhow!(
            "{} is not a bundle directory",
            args.bundle.display()
        ))
        .help("sign the bundle directory before packing it; unpack an archive to sign it"));
    }
    let key = load_secret_key(&args.secret_key)?;
    let id = bundle::sign(&args.bundle, &key).map_err(sign_error)?;
    ui.println(&format!(
        "signed {} with key {id}",
        args.bundle.join(bundle::SIGNATURE_FILE).display()
    ));
    Ok(Status::Success)
}

fn verify(args: VerifyArgs, ui: &Ui) -> CliResult {
    let policy = args.trust.policy()?;
    let opened = Bundle::open(&args.bundle).map_err(verify_error)?;
    ui.header(&format!("Verify {}", args.bundle.display()));
    let verified = opened.verify(&policy, ui).map_err(verify_error)?;
    print_verified(&verified, ui);
    Ok(Status::Success)
}

fn print_verified(verified: &VerifiedBundle, ui: &Ui) {
    let manifest = verified.manifest();
    ui.println(&format!(
        "bundle {} version {} verified: {} files, {}, {}\ndigest {} (checked in {})",
        manifest.name,
        manifest.version,
        manifest.blobs.len() + 2,
        format_bytes(manifest.total_size()),
        verified.signer(),
        verified.digest(),
        format_duration(ui.elapsed()),
    ));
}

fn pack(args: PackArgs, ui: &Ui) -> CliResult {
    let split_size = args
        .split_size
        .as_deref()
        .map(archive::parse_size)
        .transpose()
        .map_err(|reason| CliError::usage(anyhow::anyhow!(reason)))?;
    let options = PackOptions {
        split_size,
        level: args.level,
        ..PackOptions::default()
    };
    ui.header(&format!("Pack {}", args.dir.display()));
    let summary = archive::pack(&args.dir, &args.output, &options, ui).map_err(pack_error)?;
    for file in &summary.files {
        ui.println(&format!("wrote {}", file.display()));
    }
    ui.println(&format!(
        "packed {} into {} ({:.1}% of the input) in {}",
        format_bytes(summary.input_size),
        format_bytes(summary.archive.size),
        100.0 * summary.archive.size as f64 / summary.input_size.max(1) as f64,
        format_duration(ui.elapsed()),
    ));
    if let Some(digest) = summary.archive.digest {
        ui.println(&format!(
            "archive digest {digest} (the parts' payloads joined)"
        ));
    }
    ui.println(&format!(
        "next: airlock bundle verify {} --key KEY.pub",
        summary.files[0].display()
    ));
    Ok(Status::Success)
}

fn unpack(args: UnpackArgs, ui: &Ui) -> CliResult {
    let policy = args.trust.policy()?;
    ui.header(&format!(
        "Unpack {} into {}",
        args.file.display(),
        args.output.display()
    ));
    let verified =
        archive::unpack(&args.file, &args.output, &policy, ui).map_err(|error| match error {
            UnpackError::Verify(error) => verify_error(error),
            UnpackError::OutputExists { .. } => CliError::usage(error)
                .help("unpack into a new directory, or remove the existing one first"),
            other => CliError::failure(other),
        })?;
    print_verified(&verified, ui);
    Ok(Status::Success)
}

fn inspect(args: InspectArgs) -> CliResult {
    let opened = Bundle::open(&args.bundle).map_err(verify_error)?;
    let inspection = opened.inspect().map_err(verify_error)?;
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&InspectReport::from(&inspection))
                .map_err(CliError::internal)?;
            print_output(&format!("{json}\n"))?;
        }
        OutputFormat::Text => print_output(&inspect_text(&inspection))?,
    }
    Ok(Status::Success)
}

/// The JSON form of `inspect`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectReport<'a> {
    name: &'a str,
    version: u64,
    k0s_version: &'a str,
    digest: Digest,
    /// The key id in the signature file, not verified.
    signature_key_id: Option<String>,
    stacks: &'a [bundle::manifest::Stack],
    artifacts: &'a [bundle::Artifact],
    blob_count: usize,
    total_size: u64,
}

impl<'a> From<&'a BundleInspection> for InspectReport<'a> {
    fn from(inspection: &'a BundleInspection) -> Self {
        let manifest = &inspection.manifest;
        InspectReport {
            name: &manifest.name,
            version: manifest.version,
            k0s_version: &manifest.k0s.version,
            digest: inspection.digest,
            signature_key_id: inspection.signature_key_id.map(|id| id.to_string()),
            stacks: &manifest.stacks,
            artifacts: &manifest.artifacts,
            blob_count: manifest.blobs.len(),
            total_size: manifest.total_size(),
        }
    }
}

fn inspect_text(inspection: &BundleInspection) -> String {
    let manifest = &inspection.manifest;
    let signature = match inspection.signature_key_id {
        Some(id) => format!("key {id} (not verified; run `airlock bundle verify --key`)"),
        None => "unsigned".to_string(),
    };
    let mut text = format!(
        "bundle     {}\nversion    {}\nk0s        {}\ndigest     {}\nsignature  {}\nsize       {} in {} blobs\n",
        manifest.name,
        manifest.version,
        manifest.k0s.version,
        inspection.digest,
        signature,
        format_bytes(manifest.total_size()),
        manifest.blobs.len(),
    );
    if !manifest.stacks.is_empty() {
        text.push_str("\nSTACK                VERSION\n");
        for stack in &manifest.stacks {
            text.push_str(&format!("{:<20} {}\n", stack.name, stack.version));
        }
    }
    text.push_str("\nARTIFACT                         KIND           PLATFORM     STACK          SIZE        DIGEST\n");
    for artifact in &manifest.artifacts {
        text.push_str(&format!(
            "{:<32} {:<14} {:<12} {:<14} {:<11} {}\n",
            artifact.name,
            artifact.kind,
            artifact
                .platform
                .as_ref()
                .map_or("-".to_string(), ToString::to_string),
            artifact.stack.as_deref().unwrap_or("-"),
            format_bytes(artifact.size),
            artifact.digest,
        ));
    }
    text
}

/// Loads the registry credentials: the file `--registry-auth` names, else Docker's default
/// `config.json` if there is one, else none.
fn registry_credentials(explicit: Option<&std::path::Path>) -> Result<Credentials, CliError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match Credentials::default_path().filter(|path| path.is_file()) {
            Some(path) => path,
            None => return Ok(Credentials::none()),
        },
    };
    let credentials = Credentials::load(&path).map_err(|error| {
        CliError::usage(error).help(
            "pass a Docker-style config.json with --registry-auth, as `docker login` writes it",
        )
    })?;
    tracing::debug!(file = %path.display(), "registry credentials loaded");
    Ok(credentials)
}

fn build_error(error: BuildError) -> CliError {
    let (status, help): (Status, Option<String>) = match &error {
        BuildError::Spec(_) => (
            Status::Usage,
            Some("fix the specification and build again".into()),
        ),
        BuildError::OutputNotBundle { .. } => (
            Status::Usage,
            Some("build into a new directory, or into the directory of an earlier build".into()),
        ),
        BuildError::SourceUnreadable { .. } | BuildError::SourceNotFile { .. } => (
            Status::Usage,
            Some("paths in a specification are relative to the specification's directory".into()),
        ),
        BuildError::DigestMismatch { .. } => (
            Status::Failure,
            Some(
                "the source is not the pinned artifact; replace it, or update the pinned digest if the change is intended"
                    .into(),
            ),
        ),
        BuildError::ImageNotFound { .. } | BuildError::PlatformNotFound { .. } => (
            Status::Usage,
            Some("check the image's `ref` and `platform` against the layout's index.json".into()),
        ),
        BuildError::NoInstallPath { .. } => (Status::Usage, None),
        BuildError::InvalidBundle { .. } => (
            Status::Usage,
            Some("fix the specification and build again".into()),
        ),
        BuildError::Unpinned { lock, .. } => (
            Status::Usage,
            Some(format!(
                "build once without --frozen to record their digests in {}, or pin `digest` in the specification",
                lock.display()
            )),
        ),
        BuildError::Lock(_) => (
            Status::Usage,
            Some("fix or delete the lock file; a build without --frozen writes it again".into()),
        ),
        BuildError::Fetch(fetch) => fetch_help(fetch),
        _ => (Status::Failure, None),
    };
    let error = CliError::failure(error).status(status);
    error.maybe_help(help)
}

/// Chooses the exit status and help line of a failed download.
fn fetch_help(error: &FetchError) -> (Status, Option<String>) {
    let upstream_changed = |pinned_by: &PinOrigin| match pinned_by {
        PinOrigin::Spec => "the download is not the pinned content; check the source, or update \
                            `digest` in the specification if the change is intended"
            .to_string(),
        PinOrigin::Lock(path) => format!(
            "the content changed upstream since {} was written; if the change is expected, \
             delete its entry from the lock file and build again",
            path.display()
        ),
    };
    let help = match error {
        FetchError::FileDigestMismatch { pinned_by, .. }
        | FetchError::ChartPinMismatch { pinned_by, .. }
        | FetchError::ImagePinMismatch { pinned_by, .. } => upstream_changed(pinned_by),
        FetchError::ChartArchiveMismatch { .. } => "the repository serves an archive that its \
             index does not describe; build again later, or use another mirror of the repository"
            .to_string(),
        FetchError::BlobDigestMismatch { .. } => "the registry sent content that does not match \
             its digest; build again, and if it fails again, pull from another mirror"
            .to_string(),
        FetchError::Unauthorized { registry, .. } => format!(
            "log in with `docker login {registry}`, or name a config.json with --registry-auth"
        ),
        FetchError::Unreachable { .. } | FetchError::Http { .. } => "check the URL, the network, \
             the proxy settings (HTTPS_PROXY, NO_PROXY) and --ca-cert; a build run again \
             continues its partial downloads"
            .to_string(),
        FetchError::ChartNotFound { .. }
        | FetchError::NotFound { .. }
        | FetchError::PlatformNotFound { .. }
        | FetchError::PlatformMismatch { .. } => {
            return (
                Status::Usage,
                Some("check the name, version and platform in the specification".into()),
            );
        }
        FetchError::Credentials(_) => {
            return (
                Status::Usage,
                Some("fix the credentials file, or name another with --registry-auth".into()),
            );
        }
        FetchError::CaCert { .. } => {
            return (
                Status::Usage,
                Some("pass a PEM file of CA certificates with --ca-cert".into()),
            );
        }
        _ => return (Status::Failure, None),
    };
    (Status::Failure, Some(help))
}

fn sign_error(error: SignError) -> CliError {
    match error {
        SignError::Read(error) => verify_error(error),
        other => CliError::failure(other),
    }
}

fn pack_error(error: PackError) -> CliError {
    match error {
        PackError::Bundle { source, dir } => {
            verify_error(source).context(format!("cannot pack {}", dir.display()))
        }
        PackError::SplitTooSmall { .. } | PackError::TooManyParts { .. } => {
            CliError::usage(error).help("choose a larger --split-size")
        }
        other => CliError::failure(other),
    }
}

/// Maps a verification error to the CLI: the message names the file and digests, and the help
/// line tells the user what to do.
pub fn verify_error(error: VerifyError) -> CliError {
    const DAMAGED: &str =
        "the bundle was changed or damaged after it was built; copy it again from the original";
    let (status, help): (Status, Option<String>) = match &error {
        VerifyError::NotFound { path } => {
            let first_part = archive::part_path(path, 1);
            let help = first_part.exists().then(|| {
                format!(
                    "the archive is split; pass its first part, {}",
                    first_part.display()
                )
            });
            (Status::Usage, help)
        }
        VerifyError::NoManifest { .. } => (
            Status::Usage,
            Some(
                "pass a bundle directory, a .tar.zst, or the first part of a split archive".into(),
            ),
        ),
        VerifyError::Signature { source, .. } => (Status::Failure, Some(signature_help(source))),
        VerifyError::Part(part) => (Status::Failure, Some(part_help(part).into())),
        VerifyError::Unlisted { .. } => (
            Status::Failure,
            Some("remove the file, or rebuild the bundle if it belongs in it".into()),
        ),
        VerifyError::BadEntry { .. }
        | VerifyError::OversizedEntry { .. }
        | VerifyError::ManifestNotFirst { .. } => (
            Status::Failure,
            Some("do not extract this archive; it was not written by `airlock bundle pack`".into()),
        ),
        _ => (Status::Failure, Some(DAMAGED.into())),
    };
    let error = CliError::failure(error).status(status);
    error.maybe_help(help)
}

fn signature_help(error: &SignatureError) -> String {
    match error {
        SignatureError::Unsigned => {
            "sign it with `airlock bundle sign`, or pass --allow-unsigned to accept it anyway"
                .into()
        }
        SignatureError::NoTrustedKey { key_id } => {
            format!("pass the public key with id {key_id} with --key")
        }
        SignatureError::UntrustedKey { key_id, .. } => {
            format!("if you trust key {key_id}, pass its public key with --key")
        }
        SignatureError::Malformed { .. }
        | SignatureError::Invalid { .. }
        | SignatureError::CommentMismatch { .. } => {
            "do not use this bundle: its signature does not match; get it again from its builder"
                .into()
        }
    }
}

fn part_help(error: &PartError) -> &'static str {
    match error {
        PartError::MissingPart { .. } => "copy every part of the archive into the same directory",
        PartError::Truncated { .. } => {
            "the part was cut short, for example by a full disk; copy it again"
        }
        PartError::Foreign { .. } | PartError::ExtraPart { .. } => {
            "remove parts of other archives from the directory and copy this archive's parts again"
        }
        PartError::Reordered { .. } => {
            "the parts were renamed; restore their names from the archive"
        }
        PartError::NotFirstPart { .. } => "pass the first part; airlock finds the others beside it",
        _ => "copy the archive again from the original",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_uses_singular_forms() {
        let transfer = TransferSummary {
            copied_files: 1,
            copied_images: 1,
            copied_bytes: 2048,
            downloaded_bytes: 512,
            downloaded_blobs: 1,
            reused_bytes: 1024,
            reused_blobs: 1,
            ..TransferSummary::default()
        };
        assert_eq!(
            describe_transfer(&transfer, Path::new("out")),
            "copied 1 local file and 1 image from a local OCI layout (2.0 KiB), \
             reused 1 blob (1.0 KiB) from out, downloaded 1 blob (512 B)"
        );
    }

    #[test]
    fn transfer_without_sources_says_nothing_moved() {
        let transfer = TransferSummary::default();
        assert_eq!(
            describe_transfer(&transfer, Path::new("out")),
            "copied, reused and downloaded nothing"
        );
    }
}
