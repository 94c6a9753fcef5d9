//! The library API other modules call: verified bundles, blob readers and OCI archives.

use std::fs;
use std::io::Read;
use std::path::Path;

use airlock::bundle::keys::Signer;
use airlock::bundle::spec::BundleSpec;
use airlock::bundle::{ArtifactKind, Bundle, Platform, PublicKey, TrustPolicy, VerifiedBundle};
use airlock::ui::Ui;

use super::fixtures::*;

fn verify(path: &Path, public: &Path) -> VerifiedBundle {
    let policy = TrustPolicy::new(vec![PublicKey::load(public).unwrap()], false);
    Bundle::open(path)
        .unwrap()
        .verify(&policy, &Ui::hidden())
        .unwrap()
}

fn read_all(mut reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[test]
fn verified_bundle_exposes_artifacts() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 3, Some(&secret));
    let verified = verify(&bundle, &public);

    assert_eq!(verified.manifest().name, "lab");
    assert_eq!(verified.manifest().version, 3);
    assert_eq!(
        verified.digest().hex(),
        sha256_hex(&fs::read(bundle.join("bundle.yaml")).unwrap())
    );
    assert!(matches!(verified.signer(), Signer::Trusted { .. }));
    assert_eq!(
        verified.artifacts_of_kind(&ArtifactKind::K0sBinary).count(),
        1
    );
    assert_eq!(verified.artifacts_in_stack(Some("example")).count(), 4);
    assert_eq!(verified.artifacts_in_stack(None).count(), 2);
    let arm = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: None,
    };
    // Charts and manifests are for any platform; the k0s binary, archive and images are amd64.
    assert_eq!(verified.artifacts_for_platform(&arm).count(), 2);
    assert_eq!(verified.images().len(), 2);
    assert_eq!(verified.images_in_stack("example").count(), 2);
    assert_eq!(verified.images()[0].manifest.layers.len(), 2);
}

#[test]
fn blobs_read_the_same_from_directory_and_parts() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));

    let from_directory = verify(&bundle, &public);
    let from_archive = verify(&first, &public);
    for blob in &from_directory.manifest().blobs {
        let expected = fs::read(bundle.join("blobs/sha256").join(blob.digest.hex())).unwrap();
        assert_eq!(
            read_all(from_directory.open_blob(&blob.digest).unwrap()).unwrap(),
            expected
        );
        assert_eq!(
            read_all(from_archive.open_blob(&blob.digest).unwrap()).unwrap(),
            expected,
            "{}",
            blob.digest
        );
    }
    let k0s = from_archive.artifact("k0s").unwrap();
    let bytes = read_all(from_archive.open_artifact(k0s).unwrap()).unwrap();
    assert_eq!(
        bytes,
        fs::read(workspace.path("sources/k0s-v1.35.3+k0s.0")).unwrap()
    );
}

#[test]
fn blob_changed_after_verification_fails_at_end() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let verified = verify(&bundle, &public);
    let k0s = verified.artifact("k0s").unwrap().clone();
    flip_byte(&bundle.join("blobs/sha256").join(k0s.digest.hex()), 10);
    let error = read_all(verified.open_artifact(&k0s).unwrap()).unwrap_err();
    assert!(
        error.to_string().contains("changed since verification"),
        "{error}"
    );
}

#[test]
fn unknown_blob_is_an_error() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let verified = verify(&bundle, &public);
    let digest = airlock::digest::Digest::of_bytes(b"not in the bundle");
    assert!(verified.open_blob(&digest).is_err());
}

#[test]
fn oci_archive_is_deterministic_and_readable() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let archive = workspace.pack(&bundle, "lab.tar.zst", None);

    let from_directory = verify(&bundle, &public);
    let from_archive = verify(&archive, &public);
    let images: Vec<_> = from_directory.images().iter().collect();
    let reversed: Vec<_> = from_archive.images().iter().rev().collect();

    let mut first = Vec::new();
    let summary = from_directory
        .write_oci_archive(&images, &mut first)
        .unwrap();
    let mut second = Vec::new();
    from_archive
        .write_oci_archive(&reversed, &mut second)
        .unwrap();
    assert_eq!(first, second, "the same images give the same bytes");
    assert_eq!(summary.size, first.len() as u64);
    assert_eq!(summary.digest.hex(), sha256_hex(&first));
    assert_eq!(from_archive.oci_archive_digest(&images).unwrap(), summary);

    let path = workspace.path("example-images.tar");
    fs::write(&path, &first).unwrap();
    let listing = tool_ok("tar", &["-tf", path.to_str().unwrap()], None);
    assert!(
        listing.starts_with("oci-layout\nindex.json\nblobs/\nblobs/sha256/\n"),
        "{listing}"
    );
    // Two images with a shared base layer: 2 manifests, 2 configs, 3 distinct layers.
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.starts_with("blobs/sha256/") && l.len() > 20)
            .count(),
        7,
        "{listing}"
    );

    for reference in ["registry.example/app:1.0", "registry.example/app:2.0"] {
        let target = format!("oci-archive:{}:{reference}", path.display());
        let raw = tool_ok("skopeo", &["inspect", "--raw", &target], None);
        assert!(
            raw.contains("application/vnd.oci.image.manifest.v1+json"),
            "{raw}"
        );
    }
    let extracted = workspace.path("extracted");
    fs::create_dir_all(&extracted).unwrap();
    tool_ok(
        "tar",
        &[
            "-xf",
            path.to_str().unwrap(),
            "-C",
            extracted.to_str().unwrap(),
        ],
        None,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(extracted.join("index.json")).unwrap()).unwrap();
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "registry.example/app:1.0"
    );
    assert_eq!(
        annotations["org.opencontainers.image.ref.name"],
        "registry.example/app:1.0"
    );
}

#[test]
fn unsigned_bundle_with_allow_unsigned() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let policy = TrustPolicy::new(Vec::new(), true);
    let verified = Bundle::open(&bundle)
        .unwrap()
        .verify(&policy, &Ui::hidden())
        .unwrap();
    assert_eq!(verified.signer(), &Signer::Unsigned);
}

#[test]
fn lab_specifications_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lab = BundleSpec::load(&root.join("bundles/lab.yaml")).unwrap();
    let next = BundleSpec::load(&root.join("bundles/lab-next.yaml")).unwrap();
    assert_eq!(lab.name, next.name);
    assert!(
        next.version > lab.version,
        "an upgrade bundle needs a higher version"
    );
    assert_eq!(lab.k0s.version, "v1.35.3+k0s.0");
    assert_eq!(next.k0s.version, "v1.36.3+k0s.0");
    for spec in [&lab, &next] {
        let kinds: Vec<_> = spec
            .artifacts
            .iter()
            .map(|artifact| artifact.kind.clone())
            .collect();
        assert_eq!(kinds, [ArtifactKind::K0sBinary, ArtifactKind::ImageArchive]);
    }
}
