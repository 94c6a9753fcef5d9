//! Good bundles through every command and through the real tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::fixtures::*;

#[test]
fn build_verify_directory_signed() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let output = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(output.contains("bundle lab version 1 verified"), "{output}");
    assert!(output.contains("signed by trusted key"), "{output}");
}

#[test]
fn local_build_reports_copies_only() {
    let workspace = Workspace::new();
    let spec = workspace.spec("lab", 1);
    let bundle = workspace.path("lab-bundle");
    let args = [
        "bundle",
        "build",
        spec.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
    ];
    // A second build into the same directory copies the local sources again.
    for run in ["first", "second"] {
        let output = run_ok(&args);
        assert!(
            output.lines().any(|line| line
                .starts_with("copied 4 local files and 2 images from local OCI layouts (")),
            "{run} build: {output}"
        );
        assert!(!output.contains("downloaded"), "{run} build: {output}");
        assert!(!output.contains("reused"), "{run} build: {output}");
    }
}

#[test]
fn minisign_accepts_airlock_signature() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 4, Some(&secret));
    let stdout = tool_ok(
        "minisign",
        &[
            "-V",
            "-p",
            public.to_str().unwrap(),
            "-m",
            bundle.join("bundle.yaml").to_str().unwrap(),
        ],
        None,
    );
    // minisign prints the trusted comment it verified.
    assert!(stdout.contains("Trusted comment: timestamp:"), "{stdout}");
    assert!(
        stdout.contains("file:bundle.yaml\tbundle:lab\tversion:4"),
        "{stdout}"
    );

    // A changed bundle.yaml fails minisign's check too.
    let manifest = bundle.join("bundle.yaml");
    let text = fs::read_to_string(&manifest)
        .unwrap()
        .replace("version: 4", "version: 5");
    fs::write(&manifest, text).unwrap();
    let output = tool(
        "minisign",
        &[
            "-V",
            "-p",
            public.to_str().unwrap(),
            "-m",
            manifest.to_str().unwrap(),
        ],
        None,
    );
    assert!(!output.status.success());
}

#[test]
fn airlock_accepts_minisign_signature() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let public = workspace.path("minisign.pub");
    let secret = workspace.path("minisign.key");
    tool_ok(
        "minisign",
        &[
            "-G",
            "-W",
            "-p",
            public.to_str().unwrap(),
            "-s",
            secret.to_str().unwrap(),
        ],
        None,
    );
    tool_ok(
        "minisign",
        &[
            "-S",
            "-s",
            secret.to_str().unwrap(),
            "-m",
            bundle.join("bundle.yaml").to_str().unwrap(),
        ],
        None,
    );
    let output = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(output.contains("signed by trusted key"), "{output}");
}

#[test]
fn blobs_pass_sha256sum() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let blobs = bundle.join("blobs/sha256");
    let listing = shell_ok(
        "for f in *; do printf '%s  %s\\n' \"$f\" \"$f\"; done > ../SHA256SUMS",
        &blobs,
    );
    assert!(listing.is_empty());
    let checked = tool_ok("sha256sum", &["-c", "../SHA256SUMS"], Some(&blobs));
    fs::remove_file(bundle.join("blobs/SHA256SUMS")).unwrap();
    assert!(checked.lines().count() >= 8, "{checked}");
    assert!(
        checked.lines().all(|line| line.ends_with(": OK")),
        "{checked}"
    );
}

#[test]
fn skopeo_reads_images_in_bundle() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    for reference in ["registry.example/app:1.0", "registry.example/app:2.0"] {
        let target = format!("oci:{}:{reference}", bundle.display());
        let json = tool_ok("skopeo", &["inspect", "--raw", &target], None);
        let manifest: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 2, "{json}");
        let config = tool_ok("skopeo", &["inspect", "--config", &target], None);
        assert!(config.contains("\"architecture\": \"amd64\""), "{config}");
    }
}

#[test]
fn pack_lists_with_tar_and_verifies() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let archive = workspace.pack(&bundle, "lab.tar.zst", None);

    for file in [
        archive.clone(),
        bundle.join("bundle.yaml"),
        bundle.join("bundle.yaml.minisig"),
        largest_blob(&bundle),
    ] {
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{file:?} is not readable by all");
    }

    let listing = tool_ok("tar", &["--zstd", "-tf", archive.to_str().unwrap()], None);
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(
        names[..4],
        [
            "bundle.yaml",
            "bundle.yaml.minisig",
            "oci-layout",
            "index.json"
        ]
    );
    assert!(
        names
            .iter()
            .filter(|name| name.starts_with("blobs/sha256/") && name.len() > 20)
            .count()
            >= 8
    );

    let output = run_ok(&[
        "bundle",
        "verify",
        archive.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(output.contains("verified"), "{output}");
}

#[test]
fn pack_is_deterministic() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let first = workspace.path("first.tar.zst");
    let second = workspace.path("second.tar.zst");
    run_ok(&[
        "bundle",
        "pack",
        bundle.to_str().unwrap(),
        "-o",
        first.to_str().unwrap(),
    ]);
    run_ok(&[
        "bundle",
        "pack",
        bundle.to_str().unwrap(),
        "-o",
        second.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(first).unwrap(), fs::read(second).unwrap());
}

#[test]
fn split_parts_join_with_cat_zstd_tar() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let archive = workspace.path("media/lab.tar.zst");
    fs::create_dir_all(workspace.path("media")).unwrap();
    run_ok(&[
        "bundle",
        "pack",
        bundle.to_str().unwrap(),
        "-o",
        archive.to_str().unwrap(),
        "--split-size",
        "512KiB",
    ]);

    let parts: Vec<_> = fs::read_dir(workspace.path("media"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(parts.len() >= 3, "{parts:?}");
    for part in &parts {
        assert!(fs::metadata(part).unwrap().len() <= 512 << 10, "{part:?}");
        // Each part is a zstd stream on its own.
        tool_ok("zstd", &["-t", "-q", part.to_str().unwrap()], None);
    }

    let restored = workspace.path("restored");
    fs::create_dir_all(&restored).unwrap();
    shell_ok(
        &format!(
            "cat {}/lab.tar.zst.part* | zstd -d | tar -x -C {}",
            workspace.path("media").display(),
            restored.display()
        ),
        workspace.dir.path(),
    );
    tool_ok(
        "diff",
        &["-r", bundle.to_str().unwrap(), restored.to_str().unwrap()],
        None,
    );

    let first = workspace.path("media/lab.tar.zst.part001");
    let output = run_ok(&[
        "bundle",
        "verify",
        first.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(output.contains("verified"), "{output}");
}

#[test]
fn repack_with_fewer_parts_removes_stale_parts() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    assert!(workspace.path("lab.tar.zst.part005").exists());
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("1MiB"));
    assert!(!workspace.path("lab.tar.zst.part005").exists());
    run_ok(&[
        "bundle",
        "verify",
        first.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn unpack_restores_identical_directory() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("300KiB"));
    let unpacked = workspace.path("unpacked");
    run_ok(&[
        "bundle",
        "unpack",
        first.to_str().unwrap(),
        "-o",
        unpacked.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    tool_ok(
        "diff",
        &["-r", bundle.to_str().unwrap(), unpacked.to_str().unwrap()],
        None,
    );
    run_ok(&[
        "bundle",
        "verify",
        unpacked.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
}

#[test]
fn inspect_prints_text_and_json() {
    let workspace = Workspace::new();
    let (_, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 9, Some(&secret));
    let text = run_ok(&["bundle", "inspect", bundle.to_str().unwrap()]);
    assert!(text.contains("bundle     lab"), "{text}");
    assert!(text.contains("version    9"), "{text}");
    assert!(text.contains("k0s        v1.35.3+k0s.0"), "{text}");
    assert!(text.contains("registry.example/app:2.0"), "{text}");
    assert!(text.contains("not verified"), "{text}");

    let archive = workspace.pack(&bundle, "lab.tar.zst", None);
    let output = airlock(&[
        "bundle",
        "inspect",
        archive.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["name"], "lab");
    assert_eq!(json["version"], 9);
    assert_eq!(json["k0sVersion"], "v1.35.3+k0s.0");
    assert_eq!(json["stacks"][0]["name"], "example");
    assert_eq!(json["artifacts"].as_array().unwrap().len(), 6);
    assert!(json["signatureKeyId"].as_str().unwrap().len() == 16);
    let k0s = &json["artifacts"][0];
    assert_eq!(k0s["install"]["path"], "/usr/local/bin/k0s");
    assert_eq!(k0s["install"]["mode"], "0755");
    assert_eq!(k0s["install"]["hosts"], "all");
    assert_eq!(
        json["artifacts"][1]["install"]["path"],
        "<data-dir>/images/k0s-airgap-bundle-v1.35.3+k0s.0-amd64.tar"
    );
}

#[test]
fn multi_arch_image_resolves_to_platform() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let manifest = fs::read_to_string(bundle.join("bundle.yaml")).unwrap();
    let image_section = manifest
        .split("name: registry.example/app:2.0")
        .nth(1)
        .unwrap();
    assert!(
        image_section.contains("platform: linux/amd64"),
        "{manifest}"
    );
    // The arm64 manifest of the multi-arch image is not in the bundle.
    let oci_index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("index.json")).unwrap()).unwrap();
    assert_eq!(oci_index["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn minisign_signs_with_airlock_key() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, None);
    let manifest = bundle.join("bundle.yaml");
    tool_ok(
        "minisign",
        &[
            "-S",
            "-s",
            secret.to_str().unwrap(),
            "-m",
            manifest.to_str().unwrap(),
        ],
        None,
    );
    let output = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert!(output.contains("signed by trusted key"), "{output}");
}

#[test]
fn encrypted_key_signs_with_password_from_environment() {
    let workspace = Workspace::new();
    let prefix = workspace.path("encrypted");
    let spec = workspace.spec("lab", 1);
    let bundle = workspace.path("lab-bundle");
    let with_password = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(args)
            .env("AIRLOCK_KEY_PASSWORD", "correct horse battery staple")
            .output()
            .unwrap()
    };
    let generated = with_password(&["key", "generate", "-o", prefix.to_str().unwrap()]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let key_text = fs::read_to_string(workspace.path("encrypted.key")).unwrap();
    assert!(
        key_text.starts_with("untrusted comment: airlock encrypted secret key"),
        "{key_text}"
    );

    let secret = workspace.path("encrypted.key");
    let built = with_password(&[
        "bundle",
        "build",
        spec.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--sign",
        secret.to_str().unwrap(),
    ]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let public = workspace.path("encrypted.pub");
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    tool_ok(
        "minisign",
        &[
            "-V",
            "-p",
            public.to_str().unwrap(),
            "-m",
            bundle.join("bundle.yaml").to_str().unwrap(),
        ],
        None,
    );
}
