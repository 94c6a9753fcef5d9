//! Downloads for `bundle build`: files by URL, Helm charts and container images.
//!
//! Each download is checked against the digest that pins it: the one the specification gives, or
//! else the one its lock file recorded on an earlier build. A classic chart archive is also
//! checked against the digest its repository index lists, and a registry blob against the
//! descriptor that names it. A blob that the output directory already has with the right digest is
//! reused without a request, so a build run again with the same specification and lock downloads
//! nothing it already has. Downloads run `jobs` at a time and share layers between images.

// Fetch errors carry their evidence (URLs, both digests, the pin's origin), which makes them
// larger than clippy likes. A build makes at most one, so their size costs nothing.
#![allow(clippy::result_large_err)]

mod chart;
mod credentials;
mod http;
mod registry;
mod transfer;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use oci_client::Reference;
use tokio::sync::Semaphore;
use url::Url;

pub use credentials::{Credentials, CredentialsError, RegistryCredential};

use self::http::UrlOrigin;
use self::registry::Registry;
use self::transfer::{Expected, TransferError, download};
use super::build::BlobDir;
use super::lock::{Lock, LockedChart, LockedFile, LockedImage};
use super::manifest::{Blob, Platform};
use super::oci::{self, Descriptor, DescriptorPlatform, ImageManifest, MAX_MANIFEST_JSON};
use super::spec::{ArtifactSpec, BundleSpec, ChartSource, ImageSpec, Source};
use crate::digest::Digest;
use crate::ui::{Item, Ui, format_bytes};

/// The media type of the chart archive layer of a Helm chart stored in an OCI registry.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The download settings of `bundle build`.
#[derive(Debug)]
pub struct NetworkOptions {
    /// The number of downloads that run at a time.
    pub jobs: usize,
    /// PEM files of CA certificates to trust besides the system's, for example an inspecting
    /// proxy's.
    pub ca_certs: Vec<PathBuf>,
    pub credentials: Credentials,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        NetworkOptions {
            jobs: 4,
            ca_certs: Vec::new(),
            credentials: Credentials::none(),
        }
    }
}

/// The origin of the digest a download is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinOrigin {
    Spec,
    Lock(PathBuf),
}

impl fmt::Display for PinOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinOrigin::Spec => f.write_str("the specification pins"),
            PinOrigin::Lock(path) => write!(f, "the lock file {} records", path.display()),
        }
    }
}

/// A download that failed or did not match its pin.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("artifact {artifact}: {url} has digest {computed}, but {pinned_by} {expected}")]
    FileDigestMismatch {
        artifact: String,
        url: String,
        expected: Digest,
        computed: Digest,
        pinned_by: PinOrigin,
    },
    #[error(
        "artifact {artifact}: the chart archive {url} has digest {computed}, but {index} lists {listed}"
    )]
    ChartArchiveMismatch {
        artifact: String,
        url: String,
        index: String,
        listed: Digest,
        computed: Digest,
    },
    #[error(
        "artifact {artifact}: {chart} has digest {listed} in {index}, but {pinned_by} {expected}"
    )]
    ChartPinMismatch {
        artifact: String,
        chart: String,
        index: String,
        listed: Digest,
        expected: Digest,
        pinned_by: PinOrigin,
    },
    #[error("artifact {artifact}: {index} has no chart {name} version {version} (listed versions: {})", .available.join(", "))]
    ChartNotFound {
        artifact: String,
        index: String,
        name: String,
        version: String,
        available: Vec<String>,
    },
    #[error("invalid chart repository index {url}: {reason}")]
    InvalidIndex { url: String, reason: String },
    #[error(
        "image {image}: {reference} resolves to manifest {resolved} for {platform}, but {pinned_by} {expected}"
    )]
    ImagePinMismatch {
        image: String,
        reference: String,
        platform: Platform,
        resolved: Digest,
        expected: Digest,
        pinned_by: PinOrigin,
    },
    #[error("image {image}: blob {expected} from {repository} has digest {computed}")]
    BlobDigestMismatch {
        image: String,
        repository: String,
        expected: Digest,
        computed: Digest,
    },
    #[error("image {image}: {reference} has no manifest for platform {platform} (it has: {})", .available.join(", "))]
    PlatformNotFound {
        image: String,
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    #[error("image {image}: {reference} is an image for {found}, but the bundle needs {platform}")]
    PlatformMismatch {
        image: String,
        reference: String,
        found: String,
        platform: Platform,
    },
    #[error("image {image}: invalid image manifest from {reference}: {reason}")]
    InvalidManifest {
        image: String,
        reference: String,
        reason: String,
    },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} failed {attempts} times; the last error: {reason}")]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("registry {registry} refused access to {reference}{}", match (.anonymous, .credentials) {
        (true, _) => " without credentials".to_string(),
        (false, Some(path)) => format!(" with the credentials from {}", path.display()),
        (false, None) => " with the given credentials".to_string(),
    })]
    Unauthorized {
        registry: String,
        reference: String,
        anonymous: bool,
        credentials: Option<PathBuf>,
    },
    #[error("registry {registry} has no {reference}")]
    NotFound { registry: String, reference: String },
    #[error("registry {registry}: {reference}: {reason}")]
    Registry {
        registry: String,
        reference: String,
        reason: String,
    },
    #[error("{source_name} sent {received} bytes, but {expected} bytes were expected")]
    SizeMismatch {
        source_name: String,
        expected: u64,
        received: u64,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot use CA certificate file {path}: {reason}")]
    CaCert { path: PathBuf, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// A digest a download must have.
#[derive(Clone, Debug)]
struct Pin {
    digest: Digest,
    size: Option<u64>,
    origin: PinOrigin,
}

/// A downloaded file artifact.
pub(crate) struct FetchedFile {
    pub blob: Blob,
    /// The file name its source gives, for the default install path.
    pub file_name: String,
}

/// An image to pull, and the platform to resolve it to.
pub(crate) struct ImageRequest<'a> {
    pub spec: &'a ImageSpec,
    pub platform: Platform,
}

/// A pulled image: its manifest's descriptor (with the platform) and every blob it needs.
pub(crate) struct FetchedImage {
    pub descriptor: Descriptor,
    pub platform: Platform,
    /// The manifest, the config and the layers.
    pub blobs: Vec<Blob>,
}

/// Everything a build downloaded or reused, and the lock entries that describe it.
pub(crate) struct Fetched {
    pub files: Vec<FetchedFile>,
    pub images: Vec<FetchedImage>,
    pub lock: Lock,
}

/// Lists the downloaded sources of `spec` that neither it nor `lock` pins, for `--frozen`.
pub(crate) fn unpinned_sources(spec: &BundleSpec, lock: &Lock) -> Vec<String> {
    let mut unpinned = Vec::new();
    let artifacts = spec
        .artifacts
        .iter()
        .chain(spec.stacks.iter().flat_map(|stack| &stack.artifacts));
    for artifact in artifacts.filter(|a| a.digest.is_none()) {
        match &artifact.source {
            Source::Url(url) if lock.file(url).is_none() => {
                unpinned.push(format!("artifact {} ({url})", artifact.name));
            }
            Source::Chart(chart)
                if lock
                    .chart(&chart.repo, &chart.name, &chart.version)
                    .is_none() =>
            {
                unpinned.push(format!("artifact {} ({chart})", artifact.name));
            }
            _ => {}
        }
    }
    for stack in &spec.stacks {
        for image in stack.images.iter().filter(|i| i.digest.is_none()) {
            let Source::Image(reference) = &image.source else {
                continue;
            };
            let platform = image
                .platform
                .clone()
                .unwrap_or_else(|| spec.default_platform());
            if !reference.contains('@') && lock.image(reference, &platform).is_none() {
                unpinned.push(format!(
                    "image {} ({reference} for {platform})",
                    image.reference
                ));
            }
        }
    }
    unpinned
}

/// The downloads of one build.
pub(crate) struct Fetcher<'a> {
    lock: &'a Lock,
    lock_path: &'a Path,
    blobs: &'a BlobDir,
    ui: &'a Ui,
    http: reqwest::Client,
    registry: Registry,
    jobs: usize,
    permits: Semaphore,
    new_lock: Mutex<Lock>,
}

impl<'a> Fetcher<'a> {
    pub fn new(
        spec: &BundleSpec,
        lock: &'a Lock,
        lock_path: &'a Path,
        blobs: &'a BlobDir,
        options: NetworkOptions,
        ui: &'a Ui,
    ) -> Result<Fetcher<'a>, FetchError> {
        let mut pems = Vec::new();
        let mut certificates = Vec::new();
        for path in &options.ca_certs {
            let invalid = |reason: String| FetchError::CaCert {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read(path).map_err(|error| invalid(error.to_string()))?;
            let blocks = pem_certificates(&text);
            if blocks.is_empty() {
                return Err(invalid("it contains no PEM certificate".to_string()));
            }
            for block in blocks {
                let certificate = reqwest::Certificate::from_pem(&block)
                    .map_err(|error| invalid(http::error_chain(&error)))?;
                certificates.push(certificate);
                pems.push(block);
            }
        }
        let jobs = options.jobs.max(1);
        Ok(Fetcher {
            lock,
            lock_path,
            blobs,
            ui,
            http: http::client(&certificates)?,
            registry: Registry::new(&spec.plain_http, &pems, Arc::new(options.credentials))?,
            jobs,
            permits: Semaphore::new(jobs),
            new_lock: Mutex::new(Lock::empty()),
        })
    }

    /// Downloads `files` and `images`, in parallel, and returns them in the order given.
    pub async fn fetch(
        &self,
        files: Vec<&ArtifactSpec>,
        images: Vec<ImageRequest<'_>>,
    ) -> Result<Fetched, FetchError> {
        let files_done = futures::stream::iter(files)
            .map(|artifact| self.fetch_file(artifact))
            .buffered(self.jobs)
            .try_collect::<Vec<_>>();
        let (files, images) = futures::try_join!(files_done, self.fetch_images(images))?;
        let mut lock = std::mem::take(&mut *self.lock_new_lock());
        lock.sort();
        Ok(Fetched {
            files,
            images,
            lock,
        })
    }

    fn lock_new_lock(&self) -> std::sync::MutexGuard<'_, Lock> {
        self.new_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the download semaphore is never closed")
    }

    /// Returns the size of blob `digest` if the output directory already has it.
    async fn existing(&self, digest: Digest) -> Result<Option<u64>, FetchError> {
        if let Some(known) = self.blobs.checked(&digest) {
            return Ok(known);
        }
        // Hashing a large layer takes seconds, so it runs beside the downloads.
        let path = self.blobs.blob_path(&digest);
        let checked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || super::build::check_blob_file(&path, &digest))
        };
        let found = checked
            .await
            .map_err(|join| FetchError::Write {
                path: path.clone(),
                source: std::io::Error::other(join),
            })?
            .map_err(|source| FetchError::Write { path, source })?;
        self.blobs.record_checked(digest, found);
        Ok(found)
    }

    fn spec_or_lock_pin(
        &self,
        spec_digest: Option<Digest>,
        locked: Option<(Digest, u64)>,
    ) -> Option<Pin> {
        match (spec_digest, locked) {
            (Some(digest), _) => Some(Pin {
                digest,
                size: None,
                origin: PinOrigin::Spec,
            }),
            (None, Some((digest, size))) => Some(Pin {
                digest,
                size: Some(size),
                origin: PinOrigin::Lock(self.lock_path.to_path_buf()),
            }),
            (None, None) => None,
        }
    }

    async fn fetch_file(&self, artifact: &ArtifactSpec) -> Result<FetchedFile, FetchError> {
        let pin = match &artifact.source {
            Source::Url(url) => self.spec_or_lock_pin(
                artifact.digest,
                self.lock.file(url).map(|f| (f.digest, f.size)),
            ),
            Source::Chart(chart) => self.spec_or_lock_pin(
                artifact.digest,
                self.lock
                    .chart(&chart.repo, &chart.name, &chart.version)
                    .map(|c| (c.digest, c.size)),
            ),
            _ => unreachable!("only url and chart sources are downloaded as files"),
        };
        let item = self
            .ui
            .item(&artifact.name, pin.as_ref().and_then(|p| p.size));
        item.set_state("checking");
        let started = Instant::now();
        let result = match &artifact.source {
            Source::Url(url) => self.fetch_url(artifact, url, pin.as_ref(), &item).await,
            Source::Chart(chart) if chart.oci_repository().is_some() => {
                self.fetch_oci_chart(artifact, chart, pin.as_ref(), &item)
                    .await
            }
            Source::Chart(chart) => {
                self.fetch_repo_chart(artifact, chart, pin.as_ref(), &item)
                    .await
            }
            _ => unreachable!("only url and chart sources are downloaded as files"),
        };
        match &result {
            Ok((_, Transfer::Reused)) => item.finish("reused from the output directory"),
            Ok((file, Transfer::Downloaded)) => {
                item.finish(&downloaded_message(file.blob.size, started))
            }
            Err(_) => item.abandon(),
        }
        let (file, _) = result?;
        if pin.is_none_or(|pin| pin.origin != PinOrigin::Spec) {
            self.record_file(artifact, &file.blob);
        }
        Ok(file)
    }

    fn record_file(&self, artifact: &ArtifactSpec, blob: &Blob) {
        let mut lock = self.lock_new_lock();
        match &artifact.source {
            Source::Url(url) => lock.files.push(LockedFile {
                url: url.clone(),
                digest: blob.digest,
                size: blob.size,
            }),
            Source::Chart(chart) => lock.charts.push(LockedChart {
                repo: chart.repo.clone(),
                name: chart.name.clone(),
                version: chart.version.clone(),
                digest: blob.digest,
                size: blob.size,
            }),
            _ => {}
        }
    }

    /// Reuses blob `digest` if the output directory has it.
    async fn reuse(&self, digest: Digest) -> Result<Option<Blob>, FetchError> {
        let Some(size) = self.existing(digest).await? else {
            return Ok(None);
        };
        self.blobs.counters.add_reused(size);
        self.blobs.counters.count_reused_blob();
        Ok(Some(Blob { digest, size }))
    }

    async fn fetch_url(
        &self,
        artifact: &ArtifactSpec,
        url: &str,
        pin: Option<&Pin>,
        item: &Item,
    ) -> Result<(FetchedFile, Transfer), FetchError> {
        let parsed = Url::parse(url).map_err(|error| FetchError::Http {
            url: url.to_string(),
            reason: error.to_string(),
        })?;
        let file_name = http::file_name(&parsed).unwrap_or_else(|| artifact.name.clone());
        if let Some(pin) = pin
            && let Some(blob) = self.reuse(pin.digest).await?
        {
            return Ok((FetchedFile { blob, file_name }, Transfer::Reused));
        }
        let _permit = self.permit().await;
        let origin = UrlOrigin {
            client: &self.http,
            url: &parsed,
        };
        // The size a lock file records is left out: a file that changed upstream should fail on
        // its digest, whose message names the lock file.
        let expected = Expected {
            digest: pin.map(|pin| pin.digest),
            size: None,
        };
        let key = Digest::of_bytes(url.as_bytes()).hex();
        let blob = download(self.blobs, &origin, &key, expected, item)
            .await
            .map_err(|error| match error {
                TransferError::DigestMismatch { expected, computed } => {
                    FetchError::FileDigestMismatch {
                        artifact: artifact.name.clone(),
                        url: url.to_string(),
                        expected,
                        computed,
                        pinned_by: pin.map(|pin| pin.origin.clone()).unwrap_or(PinOrigin::Spec),
                    }
                }
                other => transfer_error(other, url),
            })?;
        Ok((FetchedFile { blob, file_name }, Transfer::Downloaded))
    }

    async fn fetch_repo_chart(
        &self,
        artifact: &ArtifactSpec,
        chart: &ChartSource,
        pin: Option<&Pin>,
        item: &Item,
    ) -> Result<(FetchedFile, Transfer), FetchError> {
        let file_name = format!("{}-{}.tgz", chart.name, chart.version);
        if let Some(pin) = pin
            && let Some(blob) = self.reuse(pin.digest).await?
        {
            return Ok((FetchedFile { blob, file_name }, Transfer::Reused));
        }
        let indexed = {
            let _permit = self.permit().await;
            chart::find(&self.http, chart, &artifact.name).await?
        };
        if let (Some(pin), Some(listed)) = (pin, indexed.digest)
            && pin.digest != listed
        {
            return Err(FetchError::ChartPinMismatch {
                artifact: artifact.name.clone(),
                chart: chart.to_string(),
                index: indexed.index.to_string(),
                listed,
                expected: pin.digest,
                pinned_by: pin.origin.clone(),
            });
        }
        if indexed.digest.is_none() {
            tracing::warn!(
                artifact = %artifact.name,
                index = %indexed.index,
                "the repository index lists no digest for the chart; only the specification or lock file can check it"
            );
        }
        let expected = Expected {
            digest: indexed.digest.or(pin.map(|pin| pin.digest)),
            size: None,
        };
        if let Some(digest) = indexed.digest
            && let Some(blob) = self.reuse(digest).await?
        {
            return Ok((FetchedFile { blob, file_name }, Transfer::Reused));
        }
        let _permit = self.permit().await;
        let origin = UrlOrigin {
            client: &self.http,
            url: &indexed.archive,
        };
        let key = Digest::of_bytes(indexed.archive.as_str().as_bytes()).hex();
        let archive = indexed.archive.to_string();
        let blob = download(self.blobs, &origin, &key, expected, item)
            .await
            .map_err(|error| match (error, indexed.digest) {
                (TransferError::DigestMismatch { expected, computed }, Some(_)) => {
                    FetchError::ChartArchiveMismatch {
                        artifact: artifact.name.clone(),
                        url: archive.clone(),
                        index: indexed.index.to_string(),
                        listed: expected,
                        computed,
                    }
                }
                (TransferError::DigestMismatch { expected, computed }, None) => {
                    FetchError::FileDigestMismatch {
                        artifact: artifact.name.clone(),
                        url: archive.clone(),
                        expected,
                        computed,
                        pinned_by: pin.map(|pin| pin.origin.clone()).unwrap_or(PinOrigin::Spec),
                    }
                }
                (other, _) => transfer_error(other, &archive),
            })?;
        Ok((FetchedFile { blob, file_name }, Transfer::Downloaded))
    }

    async fn fetch_oci_chart(
        &self,
        artifact: &ArtifactSpec,
        chart: &ChartSource,
        pin: Option<&Pin>,
        item: &Item,
    ) -> Result<(FetchedFile, Transfer), FetchError> {
        let file_name = format!("{}-{}.tgz", chart.name, chart.version);
        if let Some(pin) = pin
            && let Some(blob) = self.reuse(pin.digest).await?
        {
            return Ok((FetchedFile { blob, file_name }, Transfer::Reused));
        }
        let repository = chart.oci_repository().expect("an OCI chart source");
        let text = format!("{repository}:{}", chart.oci_tag());
        let reference = parse_reference(&text)?;
        let pulled = {
            let _permit = self.permit().await;
            self.registry
                .resolve_image(&artifact.name, &reference, &Platform::linux_amd64())
                .await?
        };
        let Some(layer) = pulled
            .manifest
            .layers
            .iter()
            .find(|layer| layer.media_type == HELM_CHART_LAYER)
        else {
            return Err(FetchError::InvalidManifest {
                image: artifact.name.clone(),
                reference: text,
                reason: format!("it has no layer of media type {HELM_CHART_LAYER}"),
            });
        };
        if let Some(pin) = pin
            && pin.digest != layer.digest
        {
            return Err(FetchError::ChartPinMismatch {
                artifact: artifact.name.clone(),
                chart: chart.to_string(),
                index: format!("the manifest of {text}"),
                listed: layer.digest,
                expected: pin.digest,
                pinned_by: pin.origin.clone(),
            });
        }
        if let Some(blob) = self.reuse(layer.digest).await? {
            return Ok((FetchedFile { blob, file_name }, Transfer::Reused));
        }
        let _permit = self.permit().await;
        let origin = self.registry.blob(&reference, layer.digest).await?;
        let expected = Expected {
            digest: Some(layer.digest),
            size: Some(layer.size),
        };
        let blob = download(self.blobs, &origin, &layer.digest.hex(), expected, item)
            .await
            .map_err(|error| match error {
                TransferError::DigestMismatch { expected, computed } => {
                    FetchError::ChartArchiveMismatch {
                        artifact: artifact.name.clone(),
                        url: format!("{repository}@{expected}"),
                        index: format!("the manifest of {text}"),
                        listed: expected,
                        computed,
                    }
                }
                other => transfer_error(other, &text),
            })?;
        Ok((FetchedFile { blob, file_name }, Transfer::Downloaded))
    }
}

/// Whether a blob came over the network or from the output directory.
enum Transfer {
    Downloaded,
    Reused,
}

fn downloaded_message(bytes: u64, started: Instant) -> String {
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    format!(
        "downloaded {} ({}/s)",
        format_bytes(bytes),
        format_bytes((bytes as f64 / seconds) as u64)
    )
}

/// Turns a transfer failure that has no better context into a fetch error about `source_name`.
fn transfer_error(error: TransferError<FetchError>, source_name: &str) -> FetchError {
    match error {
        TransferError::Origin(error) => error,
        TransferError::Exhausted { attempts, reason } => FetchError::Unreachable {
            url: source_name.to_string(),
            attempts,
            reason,
        },
        TransferError::DigestMismatch { expected, computed } => FetchError::Http {
            url: source_name.to_string(),
            reason: format!("the content has digest {computed}, but {expected} was expected"),
        },
        TransferError::SizeMismatch { expected, received } => FetchError::SizeMismatch {
            source_name: source_name.to_string(),
            expected,
            received,
        },
        TransferError::Write { path, source } => FetchError::Write { path, source },
    }
}

fn parse_reference(text: &str) -> Result<Reference, FetchError> {
    Reference::try_from(text).map_err(|error| FetchError::Registry {
        registry: text.split('/').next().unwrap_or_default().to_string(),
        reference: text.to_string(),
        reason: format!("invalid reference: {error}"),
    })
}

/// Splits PEM text into its `CERTIFICATE` blocks.
fn pem_certificates(text: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(text);
    let mut blocks = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(length) = rest[start..].find(END) else {
            break;
        };
        let end = start + length + END.len();
        blocks.push(format!("{}\n", &rest[start..end]).into_bytes());
        rest = &rest[end..];
    }
    blocks
}

/// An image whose manifest is known and stored, with its remaining blobs to check or download.
struct ResolvedImage<'r> {
    spec: &'r ImageSpec,
    platform: Platform,
    reference: Option<Reference>,
    descriptor: Descriptor,
    manifest: ImageManifest,
    /// Whether the platform came from an index; otherwise the config is checked.
    platform_from_index: bool,
    progress: ImageProgress,
}

/// The progress item of one image and what it moved.
struct ImageProgress {
    item: Item,
    started: Instant,
    downloaded: AtomicU64,
    reused: AtomicU64,
}

impl<'a> Fetcher<'a> {
    async fn fetch_images(
        &self,
        requests: Vec<ImageRequest<'_>>,
    ) -> Result<Vec<FetchedImage>, FetchError> {
        // 1. Resolve each image to its platform manifest, `jobs` at a time.
        let resolved: Vec<ResolvedImage> = futures::stream::iter(requests)
            .map(|request| self.resolve_image(request))
            .buffered(self.jobs)
            .try_collect()
            .await?;

        // 2. Every blob once: layers shared between images are checked and downloaded once,
        //    under the first image that needs them.
        let mut seen = HashSet::new();
        let mut needed = Vec::new();
        for (index, image) in resolved.iter().enumerate() {
            for blob in image.manifest.blobs() {
                if seen.insert(blob.digest) {
                    needed.push((index, blob.clone()));
                }
            }
        }
        futures::stream::iter(needed)
            .map(|(index, blob)| self.fetch_blob(&resolved[index], blob))
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<()>>()
            .await
            .inspect_err(|_| {
                for image in &resolved {
                    image.progress.item.set_state("stopped");
                }
            })?;

        // 3. An image that came without an index names its platform in its config.
        let mut fetched = Vec::new();
        for image in resolved {
            if !image.platform_from_index {
                self.check_config_platform(&image)?;
            }
            let mut blobs = vec![Blob {
                digest: image.descriptor.digest,
                size: image.descriptor.size,
            }];
            blobs.extend(image.manifest.blobs().map(|d| Blob {
                digest: d.digest,
                size: d.size,
            }));
            let progress = image.progress;
            let downloaded = progress.downloaded.load(Ordering::Relaxed);
            let reused = progress.reused.load(Ordering::Relaxed);
            let message = if downloaded == 0 {
                format!("reused {}", format_bytes(reused))
            } else {
                format!(
                    "{}, reused {}",
                    downloaded_message(downloaded, progress.started),
                    format_bytes(reused)
                )
            };
            progress.item.finish(&message);
            let mut descriptor = image.descriptor;
            descriptor.platform = Some(DescriptorPlatform {
                os: image.platform.os.clone(),
                architecture: image.platform.architecture.clone(),
                variant: image.platform.variant.clone(),
                other: BTreeMap::new(),
            });
            fetched.push(FetchedImage {
                descriptor,
                platform: image.platform,
                blobs,
            });
        }
        Ok(fetched)
    }

    /// Finds the image's manifest for its platform: in the output directory when a pin names
    /// one that is there, else from the registry. Stores the manifest as a blob.
    async fn resolve_image<'r>(
        &self,
        request: ImageRequest<'r>,
    ) -> Result<ResolvedImage<'r>, FetchError> {
        let spec = request.spec;
        let Source::Image(source) = &spec.source else {
            unreachable!("only image sources are pulled from registries");
        };
        let item = self.ui.item(&spec.reference, None);
        item.set_state("resolving");
        let progress = ImageProgress {
            item,
            started: Instant::now(),
            downloaded: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        };
        let pin = self.spec_or_lock_pin(
            spec.digest,
            self.lock
                .image(source, &request.platform)
                .map(|locked| (locked.digest, 0)),
        );
        let digest_in_reference = source.contains('@');

        let result = async {
            if let Some(pin) = &pin
                && let Some(size) = self.existing(pin.digest).await?
            {
                let path = self.blobs.blob_path(&pin.digest);
                if let Some((descriptor, manifest)) = read_stored_manifest(&path, pin.digest, size)
                {
                    progress.reused.fetch_add(size, Ordering::Relaxed);
                    self.blobs.counters.add_reused(size);
                    self.blobs.counters.count_reused_blob();
                    return Ok((None, descriptor, manifest, false));
                }
            }
            let reference = parse_reference(source)?;
            let pulled = {
                let _permit = self.permit().await;
                self.registry
                    .resolve_image(&spec.reference, &reference, &request.platform)
                    .await?
            };
            if let Some(pin) = &pin
                && pin.digest != pulled.descriptor.digest
            {
                return Err(FetchError::ImagePinMismatch {
                    image: spec.reference.clone(),
                    reference: source.clone(),
                    platform: request.platform.clone(),
                    resolved: pulled.descriptor.digest,
                    expected: pin.digest,
                    pinned_by: pin.origin.clone(),
                });
            }
            let bytes = pulled.bytes.clone();
            let digest = pulled.descriptor.digest;
            let blobs = self.blobs;
            tokio::task::block_in_place(|| blobs.store(&bytes[..], Some(digest), None)).map_err(
                |error| match error {
                    super::build::StoreError::Read(source)
                    | super::build::StoreError::Write(_, source) => FetchError::Write {
                        path: blobs.blob_path(&digest),
                        source,
                    },
                },
            )?;
            self.blobs.counters.add_downloaded(pulled.descriptor.size);
            self.blobs.counters.count_downloaded_blob();
            progress
                .downloaded
                .fetch_add(pulled.descriptor.size, Ordering::Relaxed);
            let from_index = pulled.descriptor.platform.is_some();
            Ok((
                Some(reference),
                pulled.descriptor,
                pulled.manifest,
                from_index,
            ))
        }
        .await;
        let (reference, descriptor, manifest, platform_from_index) = match result {
            Ok(resolved) => resolved,
            Err(error) => {
                progress.item.abandon();
                return Err(error);
            }
        };
        if pin.as_ref().is_none_or(|pin| pin.origin != PinOrigin::Spec) && !digest_in_reference {
            self.lock_new_lock().images.push(LockedImage {
                reference: source.clone(),
                platform: request.platform.clone(),
                digest: descriptor.digest,
            });
        }
        let total: u64 = manifest.blobs().map(|blob| blob.size).sum();
        progress.item.set_length(total);
        progress.item.set_state("downloading");
        Ok(ResolvedImage {
            spec,
            platform: request.platform,
            reference,
            descriptor,
            manifest,
            platform_from_index,
            progress,
        })
    }

    /// Makes sure the output directory has `blob` of `image`, downloading it if needed.
    async fn fetch_blob(
        &self,
        image: &ResolvedImage<'_>,
        blob: Descriptor,
    ) -> Result<(), FetchError> {
        let progress = &image.progress;
        if let Some(existing) = self.reuse(blob.digest).await? {
            progress.reused.fetch_add(existing.size, Ordering::Relaxed);
            progress.item.inc(existing.size);
            return Ok(());
        }
        let Source::Image(source) = &image.spec.source else {
            unreachable!("only image sources are pulled from registries");
        };
        // An image reused from the output directory has no reference yet.
        let reference = match &image.reference {
            Some(reference) => reference.clone(),
            None => parse_reference(source)?,
        };
        let _permit = self.permit().await;
        let origin = self.registry.blob(&reference, blob.digest).await?;
        let expected = Expected {
            digest: Some(blob.digest),
            size: Some(blob.size),
        };
        let name = format!("{}@{}", reference.repository(), blob.digest);
        let result = download(
            self.blobs,
            &origin,
            &blob.digest.hex(),
            expected,
            &progress.item,
        )
        .await;
        match result {
            Ok(stored) => {
                progress
                    .downloaded
                    .fetch_add(stored.size, Ordering::Relaxed);
                Ok(())
            }
            Err(TransferError::DigestMismatch { expected, computed }) => {
                Err(FetchError::BlobDigestMismatch {
                    image: image.spec.reference.clone(),
                    repository: format!("{}/{}", reference.registry(), reference.repository()),
                    expected,
                    computed,
                })
            }
            Err(other) => Err(transfer_error(other, &name)),
        }
    }

    /// Checks that a single-platform image's config names the platform the bundle needs.
    fn check_config_platform(&self, image: &ResolvedImage<'_>) -> Result<(), FetchError> {
        #[derive(serde::Deserialize)]
        struct ConfigPlatform {
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        let path = self.blobs.blob_path(&image.manifest.config.digest);
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&path)
            .and_then(|file| file.take(MAX_MANIFEST_JSON).read_to_end(&mut bytes));
        if let Err(source) = read {
            return Err(FetchError::Write { path, source });
        }
        let Ok(config) = serde_json::from_slice::<ConfigPlatform>(&bytes) else {
            return Ok(());
        };
        let (Some(os), Some(architecture)) = (config.os, config.architecture) else {
            return Ok(());
        };
        let found = DescriptorPlatform {
            os,
            architecture,
            variant: config.variant,
            other: BTreeMap::new(),
        };
        if found.matches(&image.platform) {
            return Ok(());
        }
        let Source::Image(source) = &image.spec.source else {
            unreachable!("only image sources are pulled from registries");
        };
        Err(FetchError::PlatformMismatch {
            image: image.spec.reference.clone(),
            reference: source.clone(),
            found: format!("{}/{}", found.os, found.architecture),
            platform: image.platform.clone(),
        })
    }
}

/// Reads and parses a manifest blob of the output directory; `None` if it is no image manifest.
fn read_stored_manifest(
    path: &Path,
    digest: Digest,
    size: u64,
) -> Option<(Descriptor, ImageManifest)> {
    if size > MAX_MANIFEST_JSON {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).ok()?;
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| oci::MEDIA_TYPE_MANIFEST.to_string());
    oci::is_manifest(&media_type).then(|| {
        (
            Descriptor {
                media_type,
                digest,
                size,
                platform: None,
                annotations: BTreeMap::new(),
                other: BTreeMap::new(),
            },
            manifest,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_split() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let blocks = pem_certificates(text);
        assert_eq!(blocks.len(), 2);
        assert!(String::from_utf8_lossy(&blocks[1]).contains("BBB"));
    }

    #[test]
    fn unpinned_sources_lists_urls_without_digest_or_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(
            &path,
            "name: t\nversion: 1\nk0s: { version: v1.35.3+k0s.0 }\nartifacts:\n  - { name: k0s, kind: k0s-binary, source: { url: 'https://example.invalid/k0s' } }\nstacks:\n  - name: app\n    version: 1.0.0\n    images:\n      - { ref: 'example.invalid/app:1.0', source: { image: 'example.invalid/app:1.0' } }\n      - { ref: 'example.invalid/app:2.0', source: { image: 'example.invalid/app@sha256:0000000000000000000000000000000000000000000000000000000000000000' } }\n",
        )
        .unwrap();
        let spec = BundleSpec::load(&path).unwrap();
        let unpinned = unpinned_sources(&spec, &Lock::empty());
        assert_eq!(unpinned.len(), 2, "{unpinned:?}");
        assert!(unpinned[0].contains("https://example.invalid/k0s"));
        assert!(unpinned[1].contains("example.invalid/app:1.0 for linux/amd64"));

        let mut lock = Lock::empty();
        lock.files.push(LockedFile {
            url: "https://example.invalid/k0s".into(),
            digest: Digest::of_bytes(b"k0s"),
            size: 3,
        });
        assert_eq!(unpinned_sources(&spec, &lock).len(), 1);
    }
}
