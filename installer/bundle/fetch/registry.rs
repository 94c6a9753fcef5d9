//! Container registries through the OCI distribution API, with the `oci-client` crate: manifests,
//! multi-platform indexes, blobs by range, and anonymous, basic and bearer-token authentication
//! (the token flow that Docker Hub, quay.io, nvcr.io and registry.k8s.io use).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::FetchError;
use super::credentials::{Credentials, RegistryCredential};
use super::http::{CONNECT_TIMEOUT, READ_TIMEOUT, USER_AGENT, error_chain};
use super::transfer::{MAX_ATTEMPTS, OpenError, Opened, Origin};
use crate::bundle::manifest::Platform;
use crate::bundle::oci::{
    self, Descriptor, DescriptorPlatform, ImageIndex, ImageManifest, MAX_MANIFEST_JSON,
};
use crate::digest::Digest;

/// Every manifest media type airlock accepts from a registry.
const ACCEPTED_MANIFESTS: &[&str] = &[
    oci::MEDIA_TYPE_INDEX,
    oci::MEDIA_TYPE_MANIFEST,
    oci::MEDIA_TYPE_DOCKER_LIST,
    oci::MEDIA_TYPE_DOCKER_MANIFEST,
];

/// A registry client with the build's credentials.
pub(crate) struct Registry {
    client: Client,
    credentials: Arc<Credentials>,
}

/// An image manifest pulled and checked.
pub(crate) struct PulledManifest {
    pub bytes: bytes::Bytes,
    /// The manifest's descriptor, with the platform when an index named one.
    pub descriptor: Descriptor,
    pub manifest: ImageManifest,
}

impl Registry {
    /// Creates the client. Registries in `plain_http` are reached over HTTP; `ca_certs` are PEM
    /// certificates trusted besides the system's.
    pub fn new(
        plain_http: &[String],
        ca_certs: &[Vec<u8>],
        credentials: Arc<Credentials>,
    ) -> Result<Registry, FetchError> {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http.to_vec()),
            extra_root_certificates: ca_certs
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to a default client on an invalid configuration.
        let client =
            Client::try_from(config).map_err(|error| FetchError::Client(error_chain(&error)))?;
        Ok(Registry {
            client,
            credentials,
        })
    }

    /// Looks up the credentials of the reference's registry and hands them to the client, which
    /// uses them for every later request to that registry.
    async fn authenticate(&self, reference: &Reference) -> Result<RegistryAuth, FetchError> {
        let credential = self.credentials.for_registry(reference.registry()).await?;
        let auth = match credential {
            RegistryCredential::Anonymous => RegistryAuth::Anonymous,
            RegistryCredential::Basic { username, password } => {
                RegistryAuth::Basic(username, password)
            }
        };
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        Ok(auth)
    }

    /// Pulls a manifest or index by tag or digest, retrying transient failures. Returns its bytes
    /// and digest.
    async fn pull_manifest_bytes(
        &self,
        reference: &Reference,
    ) -> Result<(bytes::Bytes, Digest), FetchError> {
        let auth = self.authenticate(reference).await?;
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .pull_manifest_raw(reference, &auth, ACCEPTED_MANIFESTS)
                .await;
            match result {
                Ok((bytes, digest)) => {
                    if bytes.len() as u64 > MAX_MANIFEST_JSON {
                        return Err(self.invalid(
                            reference,
                            format!("the manifest is larger than {MAX_MANIFEST_JSON} bytes"),
                        ));
                    }
                    let computed = Digest::of_bytes(&bytes);
                    if digest
                        .parse::<Digest>()
                        .is_ok_and(|named| named != computed)
                    {
                        return Err(self.invalid(
                            reference,
                            format!("the registry names it {digest}, but its content hashes to {computed}"),
                        ));
                    }
                    return Ok((bytes, computed));
                }
                Err(error) => match classify(reference, &error, &self.credentials, &auth) {
                    OpenError::Transient(reason) if attempt < MAX_ATTEMPTS => {
                        tracing::warn!(reference = %reference, attempt, %reason, "manifest request failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(250 << (attempt - 1)))
                            .await;
                        attempt += 1;
                    }
                    OpenError::Transient(reason) => {
                        return Err(FetchError::Unreachable {
                            url: reference.whole(),
                            attempts: attempt,
                            reason,
                        });
                    }
                    OpenError::Permanent(error) => return Err(error),
                },
            }
        }
    }

    /// Resolves `reference` to the image manifest for `platform`: a manifest is taken as it is,
    /// an index is followed to its entry for the platform.
    pub async fn resolve_image(
        &self,
        image: &str,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest, FetchError> {
        let (bytes, digest) = self.pull_manifest_bytes(reference).await?;
        let media_type = media_type_of(&bytes).map_err(|reason| self.invalid(reference, reason))?;
        if oci::is_manifest(&media_type) {
            return self.parse_manifest(image, reference, bytes, digest, media_type, None);
        }

        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|error| self.invalid(reference, format!("invalid image index: {error}")))?;
        let chosen = index.manifests.iter().find(|entry| {
            oci::is_manifest(&entry.media_type)
                && entry.platform.as_ref().is_some_and(|p| p.matches(platform))
        });
        let Some(chosen) = chosen else {
            return Err(FetchError::PlatformNotFound {
                image: image.to_string(),
                reference: reference.whole(),
                platform: platform.to_string(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|entry| entry.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect(),
            });
        };
        let by_digest = reference.clone_with_digest(chosen.digest.to_string());
        self.pull_by_digest(image, &by_digest, chosen).await
    }

    /// Pulls the manifest that `descriptor` names and checks it against the descriptor.
    pub async fn pull_by_digest(
        &self,
        image: &str,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<PulledManifest, FetchError> {
        let (bytes, digest) = self.pull_manifest_bytes(reference).await?;
        if digest != descriptor.digest || bytes.len() as u64 != descriptor.size {
            return Err(self.invalid(
                reference,
                format!(
                    "the manifest has digest {digest} and {} bytes, but the index lists {} and {} bytes",
                    bytes.len(),
                    descriptor.digest,
                    descriptor.size
                ),
            ));
        }
        let media_type = media_type_of(&bytes).map_err(|reason| self.invalid(reference, reason))?;
        self.parse_manifest(
            image,
            reference,
            bytes,
            digest,
            media_type,
            descriptor.platform.clone(),
        )
    }

    fn parse_manifest(
        &self,
        image: &str,
        reference: &Reference,
        bytes: bytes::Bytes,
        digest: Digest,
        media_type: String,
        platform: Option<DescriptorPlatform>,
    ) -> Result<PulledManifest, FetchError> {
        if !oci::is_manifest(&media_type) {
            return Err(self.invalid(reference, format!("unsupported media type {media_type:?}")));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|error| FetchError::InvalidManifest {
                image: image.to_string(),
                reference: reference.whole(),
                reason: error.to_string(),
            })?;
        let descriptor = Descriptor {
            media_type,
            digest,
            size: bytes.len() as u64,
            platform,
            annotations: Default::default(),
            other: Default::default(),
        };
        Ok(PulledManifest {
            bytes,
            descriptor,
            manifest,
        })
    }

    /// Returns the origin of one blob of `reference`'s repository, for a download.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: Digest,
    ) -> Result<BlobOrigin<'_>, FetchError> {
        let auth = self.authenticate(reference).await?;
        Ok(BlobOrigin {
            registry: self,
            reference: reference.clone_with_digest(digest.to_string()),
            digest: digest.to_string(),
            auth,
        })
    }

    fn invalid(&self, reference: &Reference, reason: String) -> FetchError {
        FetchError::Registry {
            registry: reference.registry().to_string(),
            reference: reference.whole(),
            reason,
        }
    }
}

/// One blob in a registry.
pub(crate) struct BlobOrigin<'a> {
    registry: &'a Registry,
    reference: Reference,
    digest: String,
    auth: RegistryAuth,
}

#[async_trait]
impl Origin for BlobOrigin<'_> {
    type Error = FetchError;

    async fn open(&self, offset: u64) -> Result<Opened, OpenError<FetchError>> {
        let client = &self.registry.client;
        let response = client
            .pull_blob_stream_partial(&self.reference, self.digest.as_str(), offset, None)
            .await
            .map_err(|error| {
                classify(
                    &self.reference,
                    &error,
                    &self.registry.credentials,
                    &self.auth,
                )
            })?;
        let opened = match response {
            BlobResponse::Full(stream) => Opened {
                total: stream.content_length,
                start: 0,
                stream: stream.stream.boxed(),
            },
            BlobResponse::Partial(stream) => Opened {
                total: stream.content_length.map(|length| offset + length),
                start: offset,
                stream: stream.stream.boxed(),
            },
        };
        Ok(opened)
    }
}

/// Reads a manifest's media type from its `mediaType` field, or from its shape where the field
/// is missing (it is optional in OCI manifests and indexes).
fn media_type_of(bytes: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let shape: Shape =
        serde_json::from_slice(bytes).map_err(|error| format!("invalid manifest: {error}"))?;
    if shape.schema_version != Some(2) {
        return Err(format!(
            "unsupported manifest schema version {:?}; only schema 2 manifests and indexes are supported",
            shape.schema_version
        ));
    }
    match (shape.media_type, shape.manifests, shape.config) {
        (Some(media_type), _, _) => Ok(media_type),
        (None, Some(_), _) => Ok(oci::MEDIA_TYPE_INDEX.to_string()),
        (None, None, Some(_)) => Ok(oci::MEDIA_TYPE_MANIFEST.to_string()),
        (None, None, None) => Err("the manifest has neither layers nor manifests".to_string()),
    }
}

/// Sorts a failed registry request into worth retrying or not.
fn classify(
    reference: &Reference,
    error: &OciDistributionError,
    credentials: &Credentials,
    auth: &RegistryAuth,
) -> OpenError<FetchError> {
    let registry = reference.registry().to_string();
    let unauthorized = || {
        OpenError::Permanent(FetchError::Unauthorized {
            registry: registry.clone(),
            reference: reference.whole(),
            anonymous: matches!(auth, RegistryAuth::Anonymous),
            credentials: credentials.path().map(Into::into),
        })
    };
    let other = |reason: String| {
        OpenError::Permanent(FetchError::Registry {
            registry: registry.clone(),
            reference: reference.whole(),
            reason,
        })
    };
    match error {
        OciDistributionError::RequestError(error) if error.is_builder() => {
            other(error_chain(error))
        }
        OciDistributionError::RequestError(error) => OpenError::Transient(error_chain(error)),
        OciDistributionError::IoError(error) => OpenError::Transient(error.to_string()),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => unauthorized(),
            404 => OpenError::Permanent(FetchError::NotFound {
                registry: registry.clone(),
                reference: reference.whole(),
            }),
            408 | 429 | 500..=599 => OpenError::Transient(format!(
                "the registry returned HTTP {code}: {}",
                message.trim()
            )),
            _ => other(format!(
                "the registry returned HTTP {code}: {}",
                message.trim()
            )),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|code| matches!(code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if codes
                .iter()
                .any(|code| matches!(code, OciErrorCode::Toomanyrequests))
            {
                OpenError::Transient(error.to_string())
            } else if codes.iter().any(|code| {
                matches!(
                    code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                OpenError::Permanent(FetchError::NotFound {
                    registry: registry.clone(),
                    reference: reference.whole(),
                })
            } else {
                other(error.to_string())
            }
        }
        other_error => other(error_chain(other_error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_falls_back_to_shape() {
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            oci::MEDIA_TYPE_INDEX
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            oci::MEDIA_TYPE_MANIFEST
        );
        let schema1 = media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
        assert!(schema1.contains("schema version Some(1)"), "{schema1}");
    }
}
