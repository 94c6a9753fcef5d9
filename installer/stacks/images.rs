//! The per-stack image lists under `images/` and how they resolve against the images the bundle
//! pins.

use std::collections::BTreeMap;
use std::fmt;

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};

use super::RenderError;
use super::output::{PinnedImage, Stack};
use crate::digest::Digest;

static IMAGE_LISTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/images");

/// A container image reference split into its parts; `docker.io` is the registry when none is
/// given, as Docker and containerd assume.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    /// The repository path inside the registry, such as `nvidia/gpu-operator`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// An image reference that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageRefError {
    pub reference: String,
    pub reason: String,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        let invalid = |reason: &str| ImageRefError {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|e| invalid(&e.to_string()))?,
                ),
            ),
            None => (reference, None),
        };
        // A tag follows the last colon, unless that colon belongs to a registry port.
        let (name, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        let valid_part = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if registry.is_empty() || !path.split('/').all(valid_part) {
            return Err(invalid("the repository must be lower-case path segments"));
        }
        if let Some(tag) = &tag {
            let valid_tag = tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_tag {
                return Err(invalid(
                    "a tag has at most 128 letters, digits, '.', '_' or '-'",
                ));
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(invalid("it has neither a tag nor a digest"));
        }
        Ok(ImageRef {
            registry,
            path,
            tag,
            digest,
        })
    }

    /// `registry/path`, the value charts call the repository.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// `registry/path:tag`, without the digest.
    pub fn tagged(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.repository()),
            None => self.repository(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tagged())?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// One entry of `images/<stack>.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListedImage {
    pub key: String,
    pub reference: String,
    /// A template expression; the image is needed when it is true.
    pub when: Option<String>,
    /// The operator appends `-<os><version>` of each node to the tag.
    #[serde(default)]
    pub os_suffix: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageList {
    images: Vec<ListedImage>,
}

/// Reads the embedded image list of a stack.
pub fn image_list(stack: Stack) -> Result<Vec<ListedImage>, RenderError> {
    let file = format!("{}.yaml", stack.name());
    let text = IMAGE_LISTS
        .get_file(&file)
        .and_then(|file| file.contents_utf8())
        .ok_or_else(|| RenderError::Internal(format!("the image list images/{file} is missing")))?;
    let list: ImageList = yaml_serde::from_str(text)
        .map_err(|e| RenderError::Internal(format!("images/{file} is invalid: {e}")))?;
    Ok(list.images)
}

/// The values of one image that templates read as `images.<key>`.
#[derive(Clone, Debug, Serialize)]
pub struct ImageValues {
    /// `registry/path`.
    pub repository: String,
    pub registry: String,
    pub path: String,
    /// The path up to its last segment (`nvidia` of `nvidia/gpu-operator`), which the GPU
    /// Operator chart calls `repository` when it is prefixed with the registry.
    pub prefix: String,
    /// The last path segment, which the GPU Operator chart calls `image`.
    pub name: String,
    pub tag: String,
    pub digest: String,
    /// `registry/path:tag`.
    pub tagged: String,
    /// `registry/path:tag@sha256:…`.
    pub pinned: String,
}

impl ImageValues {
    fn new(image: &ImageRef, digest: Digest) -> ImageValues {
        let (prefix, name) = match image.path.rsplit_once('/') {
            Some((prefix, name)) => (format!("{}/{prefix}", image.registry), name.to_string()),
            None => (image.registry.clone(), image.path.clone()),
        };
        ImageValues {
            repository: image.repository(),
            registry: image.registry.clone(),
            path: image.path.clone(),
            prefix,
            name,
            tag: image.tag.clone().unwrap_or_default(),
            digest: digest.to_string(),
            tagged: image.tagged(),
            pinned: format!("{}@{digest}", image.tagged()),
        }
    }
}

/// The bundle's images indexed by `registry/path:tag`.
pub struct BundleImages {
    by_reference: BTreeMap<String, (ImageRef, Digest)>,
}

impl BundleImages {
    pub fn new(images: &[super::BundleImage]) -> Result<BundleImages, RenderError> {
        let mut by_reference = BTreeMap::new();
        for image in images {
            let parsed = ImageRef::parse(&image.reference).map_err(RenderError::BundleImage)?;
            by_reference.insert(parsed.tagged(), (parsed, image.digest));
        }
        Ok(BundleImages { by_reference })
    }

    /// Returns the bundle's image of `repository` when the bundle carries exactly one tag of it.
    fn only_tag_of(&self, repository: &str) -> Option<&(ImageRef, Digest)> {
        let mut tags = self
            .by_reference
            .values()
            .filter(|(image, _)| image.repository() == repository);
        let first = tags.next();
        if tags.next().is_some() { None } else { first }
    }

    /// Returns every registry the bundle's images come from, sorted.
    pub fn registries(&self) -> Vec<String> {
        let mut registries: Vec<String> = self
            .by_reference
            .values()
            .map(|(image, _)| image.registry.clone())
            .collect();
        registries.dedup();
        registries.sort();
        registries.dedup();
        registries
    }

    /// Finds the bundle's pin of `wanted`, which must name a tag. The listed tag is the version
    /// airlock was written for; a bundle that carries exactly one other tag of the same
    /// repository (a newer release for an upgrade) provides that one instead.
    pub fn resolve(
        &self,
        stack: Stack,
        wanted: &ImageRef,
    ) -> Result<(PinnedImage, ImageValues), RenderError> {
        let exact = self.by_reference.get(&wanted.tagged());
        let (image, digest) = exact
            .or_else(|| self.only_tag_of(&wanted.repository()))
            .ok_or_else(|| RenderError::ImageNotInBundle {
                stack,
                reference: wanted.tagged(),
            })?;
        if let Some(listed) = wanted.digest
            && exact.is_some()
            && listed != *digest
        {
            return Err(RenderError::ImageDigestMismatch {
                stack,
                reference: wanted.tagged(),
                listed,
                bundled: *digest,
            });
        }
        let pinned = PinnedImage {
            reference: image.tagged(),
            digest: *digest,
        };
        Ok((pinned, ImageValues::new(image, *digest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_registry_path_and_tag() {
        let image =
            ImageRef::parse("nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless").unwrap();
        assert_eq!(image.registry, "nvcr.io");
        assert_eq!(image.path, "nvidia/k8s/dcgm-exporter");
        assert_eq!(image.tag.as_deref(), Some("4.6.0-4.8.3-distroless"));
        assert_eq!(image.digest, None);
    }

    #[test]
    fn parse_fills_in_docker_hub() {
        assert_eq!(
            ImageRef::parse("busybox:1.37.0").unwrap().tagged(),
            "docker.io/library/busybox:1.37.0"
        );
        assert_eq!(
            ImageRef::parse("grafana/loki:3.7.6").unwrap().tagged(),
            "docker.io/grafana/loki:3.7.6"
        );
    }

    #[test]
    fn parse_keeps_registry_port_and_digest() {
        let digest = Digest::of_bytes(b"x");
        let image = ImageRef::parse(&format!("localhost:5000/a/b:v1@{digest}")).unwrap();
        assert_eq!(image.registry, "localhost:5000");
        assert_eq!(image.path, "a/b");
        assert_eq!(image.digest, Some(digest));
        assert_eq!(image.to_string(), format!("localhost:5000/a/b:v1@{digest}"));
        let untagged = ImageRef::parse("localhost:5000/a/b").unwrap_err();
        assert!(untagged.reason.contains("neither a tag nor a digest"));
    }

    #[test]
    fn parse_rejects_malformed_references() {
        for bad in [
            "Quay.io/UPPER/case:v1",
            "quay.io//x:v1",
            "quay.io/x:bad tag",
            "quay.io/x:v1@sha256:12",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn another_single_tag_of_the_repository_resolves() {
        let newer = super::super::BundleImage {
            reference: "quay.io/kubevirt/virt-api:v1.9.1".into(),
            digest: Digest::of_bytes(b"v1.9.1"),
        };
        let images = BundleImages::new(std::slice::from_ref(&newer)).unwrap();
        let wanted = ImageRef::parse("quay.io/kubevirt/virt-api:v1.9.0").unwrap();
        let (pinned, values) = images.resolve(Stack::Kubevirt, &wanted).unwrap();
        assert_eq!(pinned.reference, "quay.io/kubevirt/virt-api:v1.9.1");
        assert_eq!(values.tag, "v1.9.1");

        let older = super::super::BundleImage {
            reference: "quay.io/kubevirt/virt-api:v1.8.0".into(),
            ..newer.clone()
        };
        let two = BundleImages::new(&[newer, older]).unwrap();
        assert!(matches!(
            two.resolve(Stack::Kubevirt, &wanted),
            Err(RenderError::ImageNotInBundle { .. })
        ));
    }

    #[test]
    fn every_image_list_parses() {
        for stack in Stack::ALL {
            for listed in image_list(stack).unwrap() {
                let image = ImageRef::parse(&listed.reference).unwrap();
                assert!(image.tag.is_some(), "{}", listed.reference);
                assert_ne!(image.tag.as_deref(), Some("latest"), "{}", listed.reference);
            }
        }
    }
}
