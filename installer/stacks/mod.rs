//! The add-on stacks: KubeVirt, the NVIDIA GPU Operator, observability, policy and tenants.
//!
//! [`render`] turns a [`StackInput`] (the `spec.airlock` settings, host facts, k0s paths and what
//! the bundle carries) into [`Rendered`]. Per stack, that is the files for
//! `<data-dir>/manifests/<stack>/` on every controller, the chart archives and images it needs, and
//! its readiness checks. Per host, it is the node labels, install flags, files and checks. Preflight
//! warnings come last. Templates
//! (`templates/`), image lists (`images/`) and schemas (`schemas/`) are compiled into the binary.
//! Every rendered manifest is validated before `render` returns, so nothing invalid leaves the
//! machine.

mod containerd;
mod context;
mod hosts;
mod images;
mod input;
mod kubevirt;
mod output;
mod readiness;
mod templates;
mod validate;

pub use containerd::{DropInProblem, check_containerd_drop_in};
pub use context::{RESIDENCY_LABELS, sandbox_resource_name};
pub use hosts::DROP_IN_DIRS;
pub use images::{ImageRef, ImageRefError, ListedImage, image_list};
pub use input::*;
pub use output::*;
pub use readiness::rolled_out;
pub use validate::{ManifestError, ObjectRef, SchemaError, Validator, kubernetes_minor};

use crate::digest::Digest;

/// An error that stopped the stacks from rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the bundle carries no image {reference}, which the {stack} stack needs")]
    ImageNotInBundle { stack: Stack, reference: String },
    #[error("the {stack} stack lists {reference} at {listed}, but the bundle pins {bundled}")]
    ImageDigestMismatch {
        stack: Stack,
        reference: String,
        listed: Digest,
        bundled: Digest,
    },
    #[error("a bundle image is invalid: {0}")]
    BundleImage(ImageRefError),
    #[error("the bundle carries no chart {name}, which the {stack} stack needs")]
    ChartNotInBundle { stack: Stack, name: String },
    #[error("the bundle carries no kubevirt-operator manifest, which the kubevirt stack needs")]
    MissingOperatorManifest,
    #[error("the kubevirt-operator manifest cannot be used: {reason}")]
    OperatorManifest { reason: String },
    #[error("host {host}: the facts lack {fact}, which is needed because {reason}")]
    MissingFact {
        host: String,
        fact: &'static str,
        reason: &'static str,
    },
    #[error("invalid {setting} {value:?}: {help}")]
    InvalidSetting {
        setting: String,
        value: String,
        help: String,
    },
    #[error("tenant {tenant:?} is invalid: {reason}")]
    InvalidTenant { tenant: String, reason: String },
    #[error("{stack}: template {template} failed: {message}")]
    Template {
        stack: Stack,
        template: String,
        message: String,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Manifest(Box<ManifestError>),
    #[error("internal error in the stack templates: {0}")]
    Internal(String),
}

impl From<ManifestError> for RenderError {
    fn from(error: ManifestError) -> RenderError {
        RenderError::Manifest(Box::new(error))
    }
}

impl RenderError {
    /// Returns whether the error lies in airlock's own templates or lists rather than in the input.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            RenderError::Internal(_) | RenderError::Template { .. }
        )
    }
}

/// Renders and validates every stack that runs for this input.
pub fn render(input: &StackInput) -> Result<Rendered, RenderError> {
    templates::render(input)
}
