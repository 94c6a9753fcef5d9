//! The offline bundle: an OCI image layout plus a signed `bundle.yaml` that pins every file.
//!
//! A bundle directory contains `bundle.yaml`, its minisign signature `bundle.yaml.minisig`,
//! `oci-layout`, `index.json` and `blobs/sha256/<hex>`. The signature covers `bundle.yaml`, and
//! `bundle.yaml` lists every other file with its size and digest, so checking the signature and
//! then every digest checks every byte. For transport the directory is packed into one
//! `.tar.zst`, optionally split into parts (see [`archive`]).
//!
//! The flow through this module:
//! - [`build()`] turns a specification ([`spec`]) into a bundle directory, downloading what the
//!   specification names by URL, chart or image reference ([`fetch`]) and recording the digests
//!   it did not pin in a [`lock`] file;
//! - [`sign()`] writes the signature;
//! - [`Bundle::open`] opens a directory, a `.tar.zst` or the first part of a split archive;
//! - [`Bundle::verify`] checks it against a [`TrustPolicy`] and returns a [`VerifiedBundle`],
//!   the only way to read artifacts for installation;
//! - [`archive::pack`] and [`archive::unpack`] move bundles in and out of archives.

pub mod archive;
mod build;
pub mod fetch;
pub mod keys;
mod layout;
pub mod lock;
pub mod manifest;
pub mod oci;
mod oci_archive;
mod sign;
pub mod spec;
mod verified;
mod verify;

pub use build::{BuildError, BuildOptions, BuildSummary, TransferSummary, build};
pub use fetch::{Credentials, FetchError, NetworkOptions, PinOrigin};
pub use keys::{KeyError, KeyId, PublicKey, SecretKey, SignatureError, Signer, TrustPolicy};
pub use layout::EntryProblem;
pub use manifest::{Artifact, ArtifactKind, BundleManifest, HostSelector, InstallTarget, Platform};
pub use oci_archive::{OciArchiveError, OciArchiveSummary};
pub(crate) use sign::temporary_file_beside;
pub use sign::{SignError, sign};
pub use verified::{BlobReader, Image, ReadError, VerifiedBundle};
pub use verify::{Bundle, BundleInspection, VerifyError};

/// The manifest's file name, the first entry of a packed bundle.
pub const MANIFEST_FILE: &str = "bundle.yaml";
/// The signature's file name, the second entry of a packed signed bundle.
pub const SIGNATURE_FILE: &str = keys::SIGNATURE_FILE;
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
/// The directory of blobs, relative to the bundle directory.
pub const BLOBS_DIR: &str = "blobs/sha256";
