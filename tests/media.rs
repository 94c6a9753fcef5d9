//! `airlock media create`: a bundle, the binary and the keys written onto a directory that
//! stands for mounted media, read back and checked with coreutils' sha256sum.

mod common;

use std::fs;
use std::process::Command;

use common::apply::{SignedBundle, airlock};
use common::{describe, stderr};

#[test]
fn media_holds_a_verified_bundle_and_its_checksums() {
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let media = tempfile::tempdir().unwrap();
    let output = airlock()
        .args(["media", "create", "--bundle"])
        .arg(&bundle.bundle)
        .arg("--to")
        .arg(media.path())
        .arg("--key")
        .arg(&bundle.public_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stderr(&output).contains("read back"), "{}", stderr(&output));

    for name in [
        "airlock",
        "keys/site.pub",
        "README.txt",
        "SHA256SUMS",
        "lab-1.tar.zst",
    ] {
        assert!(media.path().join(name).exists(), "{name} is missing");
    }
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(media.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", describe(&check));
    assert_eq!(common::stdout(&check).lines().count(), 4);

    // The binary on the media verifies the bundle on the media.
    let verify = Command::new(media.path().join("airlock"))
        .args([
            "bundle",
            "verify",
            "lab-1.tar.zst",
            "--key",
            "keys/site.pub",
        ])
        .current_dir(media.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", describe(&verify));
}

#[test]
fn media_that_holds_airlock_media_is_refused() {
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let media = tempfile::tempdir().unwrap();
    fs::write(media.path().join("SHA256SUMS"), "").unwrap();
    let output = airlock()
        .args(["media", "create", "--bundle"])
        .arg(&bundle.bundle)
        .arg("--to")
        .arg(media.path())
        .arg("--key")
        .arg(&bundle.public_key)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("already holds airlock media"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unsigned_bundle_is_refused_for_media() {
    let bundle = SignedBundle::build("bundles/lab.yaml");
    fs::remove_file(bundle.bundle.join("bundle.yaml.minisig")).unwrap();
    let media = tempfile::tempdir().unwrap();
    let output = airlock()
        .args(["media", "create", "--bundle"])
        .arg(&bundle.bundle)
        .arg("--to")
        .arg(media.path())
        .arg("--key")
        .arg(&bundle.public_key)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("did not verify"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fs::read_dir(media.path()).unwrap().count(),
        0,
        "nothing may be written"
    );
}
