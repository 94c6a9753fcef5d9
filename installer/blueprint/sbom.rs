//! `sbom.spdx.json`: an SPDX 2.3 document (JSON) of everything the blueprint records as
//! deployed.
//!
//! The document describes one package, the bundle, which contains a package per deployed
//! artifact (the k0s binary, image archives, Helm charts, images) and, inside each image archive,
//! a package per image. Every package carries its sha256 as an SPDX checksum; the k0s binary and
//! images also carry a package URL (purl). Licenses are `NOASSERTION`, because airlock does not
//! analyse the artifacts' contents.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::record::{ArtifactRecord, Blueprint, ImageRecord};
use crate::digest::Digest;

/// The file name of the SBOM, locally and on controllers.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// Builds the SPDX document.
pub fn sbom(blueprint: &Blueprint) -> Value {
    let mut builder = Builder::default();
    let bundle = &blueprint.bundle;
    let root = builder.package(
        &format!("bundle-{}", bundle.name),
        json!({
            "name": bundle.name,
            "versionInfo": bundle.version.to_string(),
            "primaryPackagePurpose": "INSTALL",
            "comment": format!("The airlock bundle installed on cluster {}; its digest is the sha256 of bundle.yaml, which lists every blob.", blueprint.cluster.name),
        }),
        bundle.digest,
        None,
    );

    let mut images_seen = BTreeSet::new();
    for artifact in &bundle.artifacts {
        let id = artifact_package(&mut builder, artifact, &blueprint.k0s.version);
        builder.relate(&root, "CONTAINS", &id);
        for image in &artifact.images {
            let image_id = image_package(&mut builder, image, None);
            builder.relate(&id, "CONTAINS", &image_id);
            images_seen.insert((image.reference.clone(), image.digest));
        }
        if let Some(reference) = &artifact.reference {
            images_seen.insert((reference.clone(), artifact.digest));
        }
    }
    for stack in &blueprint.stacks {
        for image in &stack.images {
            if images_seen.insert((image.reference.clone(), image.digest)) {
                let id = image_package(&mut builder, image, Some(&stack.name));
                builder.relate(&root, "CONTAINS", &id);
            }
        }
    }

    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root,
    })];
    relationships.extend(builder.relationships);
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} as built by airlock", blueprint.cluster.name),
        // A URI that names this document and resolves nowhere: `.invalid` is reserved (RFC 2606).
        "documentNamespace": format!(
            "https://airlock.invalid/spdx/{}/{}/{}",
            encode(&blueprint.cluster.name),
            bundle.digest.hex(),
            blueprint.audit_log.head.hex()
        ),
        "creationInfo": {
            "created": blueprint.written_at,
            "creators": [format!("Tool: airlock-{}", blueprint.written_by.airlock)],
        },
        "documentDescribes": [root],
        "packages": builder.packages,
        "relationships": relationships,
    })
}

#[derive(Default)]
struct Builder {
    packages: Vec<Value>,
    relationships: Vec<Value>,
    ids: BTreeSet<String>,
}

impl Builder {
    /// Adds a package with the fields every package shares and returns its SPDX id.
    fn package(
        &mut self,
        name: &str,
        mut fields: Value,
        digest: Digest,
        purl: Option<String>,
    ) -> String {
        let mut id = format!("SPDXRef-{}", spdx_id_part(name));
        let mut counter = 2;
        while self.ids.contains(&id) {
            id = format!("SPDXRef-{}-{counter}", spdx_id_part(name));
            counter += 1;
        }
        self.ids.insert(id.clone());
        let object = fields
            .as_object_mut()
            .expect("package fields are an object");
        object.insert("SPDXID".into(), json!(id));
        object.insert("downloadLocation".into(), json!("NOASSERTION"));
        object.insert("filesAnalyzed".into(), json!(false));
        object.insert("licenseConcluded".into(), json!("NOASSERTION"));
        object.insert("licenseDeclared".into(), json!("NOASSERTION"));
        object.insert("copyrightText".into(), json!("NOASSERTION"));
        object.insert(
            "checksums".into(),
            json!([{ "algorithm": "SHA256", "checksumValue": digest.hex() }]),
        );
        if let Some(purl) = purl {
            object.insert(
                "externalRefs".into(),
                json!([{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl,
                }]),
            );
        }
        self.packages.push(fields);
        id
    }

    fn relate(&mut self, from: &str, relationship: &str, to: &str) {
        self.relationships.push(json!({
            "spdxElementId": from,
            "relationshipType": relationship,
            "relatedSpdxElement": to,
        }));
    }
}

fn artifact_package(builder: &mut Builder, artifact: &ArtifactRecord, k0s_version: &str) -> String {
    if let Some(reference) = &artifact.reference {
        let image = ImageRecord {
            reference: reference.clone(),
            digest: artifact.digest,
        };
        return image_package(builder, &image, artifact.stack.as_deref());
    }
    let (purpose, version, purl) = match artifact.kind.as_str() {
        "k0s-binary" => (
            "APPLICATION",
            Some(k0s_version.to_string()),
            Some(format!("pkg:github/k0sproject/k0s@{}", encode(k0s_version))),
        ),
        "image-archive" => ("ARCHIVE", artifact.version.clone(), None),
        "chart" => ("INSTALL", artifact.version.clone(), None),
        _ => ("FILE", artifact.version.clone(), None),
    };
    let mut fields = json!({
        "name": artifact.name,
        "primaryPackagePurpose": purpose,
        "comment": format!(
            "airlock artifact of kind {}, {} bytes{}{}",
            artifact.kind,
            artifact.size,
            artifact.platform.as_ref().map(|p| format!(", for {p}")).unwrap_or_default(),
            artifact.stack.as_ref().map(|s| format!(", stack {s}")).unwrap_or_default(),
        ),
    });
    if let Some(version) = version {
        fields["versionInfo"] = json!(version);
    }
    builder.package(&artifact.name, fields, artifact.digest, purl)
}

fn image_package(builder: &mut Builder, image: &ImageRecord, stack: Option<&str>) -> String {
    let (repository, tag) = split_tag(&image.reference);
    let mut fields = json!({
        "name": repository,
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!(
            "container image {}@{}{}",
            image.reference,
            image.digest,
            stack.map(|s| format!(", stack {s}")).unwrap_or_default()
        ),
    });
    if let Some(tag) = tag {
        fields["versionInfo"] = json!(tag);
    }
    builder.package(
        &image.reference,
        fields,
        image.digest,
        Some(oci_purl(image)),
    )
}

/// Splits `registry/repository:tag` into the repository and the tag.
fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').unwrap_or(0) => {
            (&name[..colon], Some(&name[colon + 1..]))
        }
        _ => (name, None),
    }
}

/// Builds the purl of an image, as the purl specification's `oci` type writes it:
/// `pkg:oci/<name>@sha256%3A<hex>?repository_url=<registry/repository>&tag=<tag>`.
fn oci_purl(image: &ImageRecord) -> String {
    let (repository, tag) = split_tag(&image.reference);
    let name = repository
        .rsplit('/')
        .next()
        .unwrap_or(repository)
        .to_lowercase();
    let mut purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        encode(&name),
        encode(&image.digest.to_string()),
        encode(repository)
    );
    if let Some(tag) = tag {
        purl.push_str(&format!("&tag={}", encode(tag)));
    }
    purl
}

/// Percent-encodes what a purl component may not contain; `/` stays, as in purl examples.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Keeps the characters SPDX ids allow: letters, digits, `.` and `-`.
fn spdx_id_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_purl_follows_the_oci_type() {
        let image = ImageRecord {
            reference: "quay.io/k0sproject/coredns:1.13.1".into(),
            digest: Digest::of_bytes(b"manifest"),
        };
        assert_eq!(
            oci_purl(&image),
            format!(
                "pkg:oci/coredns@sha256%3A{}?repository_url=quay.io/k0sproject/coredns&tag=1.13.1",
                image.digest.hex()
            )
        );
    }

    #[test]
    fn registry_port_is_not_a_tag() {
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", Some("v1"))
        );
    }

    #[test]
    fn spdx_ids_keep_allowed_characters() {
        assert_eq!(spdx_id_part("quay.io/k0s:v1+k0s"), "quay.io-k0s-v1-k0s");
    }
}
