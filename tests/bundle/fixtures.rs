//! Fixtures for the bundle tests: source artifacts, OCI layouts, specifications, keys, and a way
//! to run the airlock binary. Everything is generated into a temporary directory per test.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// The exit statuses airlock documents.
pub const FAILURE: i32 = 1;
pub const USAGE: i32 = 2;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Bytes that do not compress, from a fixed seed (xorshift64), so runs are repeatable.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Builds a tar of one file, as an image layer.
fn layer(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, content).unwrap();
    builder.into_inner().unwrap()
}

/// One image of a fixture OCI layout: its ref name and the files of its layers.
pub struct FixtureImage<'a> {
    pub ref_name: &'a str,
    pub layers: Vec<(&'a str, Vec<u8>)>,
    /// Wrap the manifest in an index with this platform and an arm64 sibling.
    pub multi_arch: bool,
}

/// Writes an OCI image layout with `images`; returns the manifest digest of each image (for
/// multi-arch images, the linux/amd64 manifest).
pub fn write_oci_layout(dir: &Path, images: &[FixtureImage]) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = sha256_hex(data);
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for image in images {
        let manifest_for = |architecture: &str| {
            let layers: Vec<(String, usize)> = image
                .layers
                .iter()
                .map(|(name, content)| put(&layer(name, content)))
                .collect();
            let diff_ids: Vec<&String> = layers.iter().map(|(digest, _)| digest).collect();
            let config = serde_json::json!({
                "architecture": architecture, "os": "linux",
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "config": {}
            });
            let (config_digest, config_size) = put(config.to_string().as_bytes());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
                "layers": layers.iter().map(|(digest, size)| serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size
                })).collect::<Vec<_>>(),
            });
            put(manifest.to_string().as_bytes())
        };
        let (digest, size) = manifest_for("amd64");
        digests.push(digest.clone());
        let annotations =
            serde_json::json!({ "org.opencontainers.image.ref.name": image.ref_name });
        if image.multi_arch {
            let (arm_digest, arm_size) = manifest_for("arm64");
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest, "size": arm_size,
                      "platform": { "os": "linux", "architecture": "arm64" } },
                    { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                      "platform": { "os": "linux", "architecture": "amd64" } },
                ]
            });
            let (index_digest, index_size) = put(index.to_string().as_bytes());
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
                "annotations": annotations
            }));
        } else {
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                "annotations": annotations
            }));
        }
    }
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": entries });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    digests
}

/// A scratch directory with source artifacts and a specification that uses all of them.
pub struct Workspace {
    pub dir: TempDir,
}

impl Workspace {
    /// Writes the sources: a k0s binary, an airgap image archive, a chart, a manifest, and an
    /// OCI layout with two images that share a layer (one of them multi-arch).
    pub fn new() -> Workspace {
        let workspace = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        let sources = workspace.path("sources");
        fs::create_dir_all(&sources).unwrap();
        let mut k0s = b"#!/bin/sh\n# k0s test double\n".to_vec();
        k0s.extend(noise(1, 700 << 10));
        fs::write(sources.join("k0s-v1.35.3+k0s.0"), k0s).unwrap();
        fs::write(
            sources.join("k0s-airgap-bundle-v1.35.3+k0s.0-amd64.tar"),
            noise(2, 300 << 10),
        )
        .unwrap();
        fs::write(sources.join("example-1.0.0.tgz"), noise(3, 20 << 10)).unwrap();
        fs::write(
            sources.join("example.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: example\n",
        )
        .unwrap();
        let shared = noise(4, 400 << 10);
        write_oci_layout(
            &sources.join("oci"),
            &[
                FixtureImage {
                    ref_name: "1.0",
                    layers: vec![("base", shared.clone()), ("app", b"app 1.0".to_vec())],
                    multi_arch: false,
                },
                FixtureImage {
                    ref_name: "2.0",
                    layers: vec![("base", shared), ("app", b"app 2.0".repeat(5000))],
                    multi_arch: true,
                },
            ],
        );
        workspace
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes the specification of a bundle called `name` and returns its path.
    pub fn spec(&self, name: &str, version: u64) -> PathBuf {
        let spec = format!(
            "\
name: {name}
version: {version}
k0s:
  version: v1.35.3+k0s.0
artifacts:
  - name: k0s
    kind: k0s-binary
    platform: linux/amd64
    source: {{ file: sources/k0s-v1.35.3+k0s.0 }}
  - name: k0s-airgap-bundle
    kind: image-archive
    source: {{ file: sources/k0s-airgap-bundle-v1.35.3+k0s.0-amd64.tar }}
stacks:
  - name: example
    version: 1.0.0
    artifacts:
      - {{ name: example-chart, kind: chart, source: {{ file: sources/example-1.0.0.tgz }} }}
      - {{ name: example-namespace, kind: manifest, source: {{ file: sources/example.yaml }} }}
    images:
      - {{ ref: 'registry.example/app:1.0', source: {{ ociLayout: {{ path: sources/oci, ref: '1.0' }} }} }}
      - {{ ref: 'registry.example/app:2.0', source: {{ ociLayout: {{ path: sources/oci, ref: '2.0' }} }} }}
"
        );
        let path = self.path(&format!("{name}.yaml"));
        fs::write(&path, spec).unwrap();
        path
    }

    /// Generates an unencrypted key pair with airlock; returns (public, secret).
    pub fn key(&self, name: &str) -> (PathBuf, PathBuf) {
        let prefix = self.path(name);
        run_ok(&[
            "key",
            "generate",
            "--unencrypted",
            "-o",
            prefix.to_str().unwrap(),
        ]);
        (
            self.path(&format!("{name}.pub")),
            self.path(&format!("{name}.key")),
        )
    }

    /// Builds the bundle `name`, signed with `key` if given; returns the bundle directory.
    pub fn build(&self, name: &str, version: u64, key: Option<&Path>) -> PathBuf {
        let output = self.path(&format!("{name}-bundle"));
        let spec = self.spec(name, version);
        let mut args = vec![
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ];
        if let Some(key) = key {
            args.extend(["--sign", key.to_str().unwrap()]);
        }
        run_ok(&args);
        output
    }
}

impl Workspace {
    /// Builds the bundle "lab" version 1 signed by a new key; returns the bundle directory and
    /// the public key.
    pub fn signed_bundle(&self) -> (PathBuf, PathBuf) {
        let (public, secret) = self.key("signer");
        (self.build("lab", 1, Some(&secret)), public)
    }

    /// Packs `bundle` into `name`, split into parts of `split` if given; returns the archive or
    /// its first part.
    pub fn pack(&self, bundle: &Path, name: &str, split: Option<&str>) -> PathBuf {
        let archive = self.path(name);
        let mut args = vec![
            "bundle",
            "pack",
            bundle.to_str().unwrap(),
            "-o",
            archive.to_str().unwrap(),
        ];
        if let Some(split) = split {
            args.extend(["--split-size", split]);
        }
        run_ok(&args);
        match split {
            Some(_) => self.path(&format!("{name}.part001")),
            None => archive,
        }
    }
}

/// The variables reqwest takes proxies from; tests clear them so that every request stays on
/// 127.0.0.1.
pub const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Runs airlock with `args`, without a key password or proxy settings in the environment.
pub fn airlock(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
    command
        .args(args)
        .env_remove("AIRLOCK_KEY_PASSWORD")
        .env("RUST_LOG", "airlock=info");
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    command.output().expect("the airlock binary runs")
}

fn describe(args: &[&str], output: &Output) -> String {
    format!(
        "airlock {}\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs airlock and asserts success; returns standard output and standard error together.
pub fn run_ok(args: &[&str]) -> String {
    let output = airlock(args);
    assert!(output.status.success(), "{}", describe(args, &output));
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs airlock and asserts it exits with `status`; returns standard error.
pub fn run_fail(args: &[&str], status: i32) -> String {
    let output = airlock(args);
    assert_eq!(
        output.status.code(),
        Some(status),
        "{}",
        describe(args, &output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs an external tool and returns its output, failing the test with its stderr otherwise.
pub fn tool(program: &str, args: &[&str], dir: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

pub fn tool_ok(program: &str, args: &[&str], dir: Option<&Path>) -> String {
    let output = tool(program, args, dir);
    assert!(
        output.status.success(),
        "{program} {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a bash pipeline; any failing command fails it.
pub fn shell_ok(script: &str, dir: &Path) -> String {
    tool_ok(
        "bash",
        &["-c", &format!("set -euo pipefail; {script}")],
        Some(dir),
    )
}

/// Flips one byte of a file at `offset` (from the end when negative).
pub fn flip_byte(path: &Path, offset: i64) {
    let mut bytes = fs::read(path).unwrap();
    let index = if offset < 0 {
        (bytes.len() as i64 + offset) as usize
    } else {
        offset as usize
    };
    bytes[index] ^= 0x55;
    fs::File::create(path).unwrap().write_all(&bytes).unwrap();
}

/// Returns the path of the largest blob of a bundle directory.
pub fn largest_blob(bundle: &Path) -> PathBuf {
    fs::read_dir(bundle.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max_by_key(|path| fs::metadata(path).unwrap().len())
        .unwrap()
}
