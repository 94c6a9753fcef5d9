//! One way to break a bundle per test, each rejected with a message that names the problem.
//! Every broken bundle is made here from a good one; none is committed.

use std::fs;
use std::path::{Path, PathBuf};

use super::fixtures::*;

fn verify_fails(bundle: &Path, public: &Path) -> String {
    run_fail(
        &[
            "bundle",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        FAILURE,
    )
}

fn blob_digest(path: &Path) -> String {
    format!("sha256:{}", path.file_name().unwrap().to_str().unwrap())
}

#[test]
fn tampered_blob() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let blob = largest_blob(&bundle);
    flip_byte(&blob, 1000);
    let error = verify_fails(&bundle, &public);
    assert!(error.contains("digest mismatch"), "{error}");
    assert!(error.contains(blob.to_str().unwrap()), "{error}");
    assert!(
        error.contains(&format!("bundle.yaml lists {}", blob_digest(&blob))),
        "{error}"
    );
    assert!(
        error.contains("help: the bundle was changed or damaged"),
        "{error}"
    );
}

#[test]
fn missing_blob() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let blob = largest_blob(&bundle);
    fs::remove_file(&blob).unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(
        error.contains(&format!("{} is missing", blob.display())),
        "{error}"
    );
    assert!(error.contains(&blob_digest(&blob)), "{error}");
}

#[test]
fn extra_file() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let extra = bundle.join("blobs/sha256").join(sha256_hex(b"smuggled"));
    fs::write(&extra, b"smuggled").unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(
        error.contains(&format!("{} is not listed in bundle.yaml", extra.display())),
        "{error}"
    );
}

#[test]
fn extra_file_at_top_level() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    fs::write(bundle.join("README"), b"hello").unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(
        error.contains("README is not listed in bundle.yaml"),
        "{error}"
    );
}

#[test]
fn tampered_index() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let index = bundle.join("index.json");
    let text = fs::read_to_string(&index)
        .unwrap()
        .replace("registry.example/app:1.0", "registry.example/evil:1.0");
    fs::write(&index, text).unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(error.contains("index.json: digest mismatch"), "{error}");
}

#[test]
fn tampered_manifest() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let manifest = bundle.join("bundle.yaml");
    let text = fs::read_to_string(&manifest)
        .unwrap()
        .replace("version: 1\n", "version: 2\n");
    fs::write(&manifest, text).unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(error.contains("does not match bundle.yaml"), "{error}");
}

#[test]
fn untrusted_key() {
    let workspace = Workspace::new();
    let (bundle, _) = workspace.signed_bundle();
    let (other, _) = workspace.key("other");
    let error = verify_fails(&bundle, &other);
    assert!(error.contains("which is not trusted"), "{error}");
    assert!(error.contains("help: if you trust key"), "{error}");
}

#[test]
fn malformed_signature() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    fs::write(
        bundle.join("bundle.yaml.minisig"),
        "untrusted comment: hello\nnot a signature\nx\ny\n",
    )
    .unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(error.contains("malformed signature"), "{error}");
}

#[test]
fn unsigned() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let (public, _) = workspace.key("signer");
    let error = verify_fails(&bundle, &public);
    assert!(error.contains("the bundle is not signed"), "{error}");
    assert!(error.contains("--allow-unsigned"), "{error}");

    let output = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    assert!(output.contains("accepting an unsigned bundle"), "{output}");
    assert!(output.contains("verified"), "{output}");
}

#[test]
fn signed_without_trusted_key() {
    let workspace = Workspace::new();
    let (bundle, _) = workspace.signed_bundle();
    let error = run_fail(&["bundle", "verify", bundle.to_str().unwrap()], FAILURE);
    assert!(error.contains("no trusted key was given"), "{error}");
}

#[test]
fn symlink_escape_in_directory() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let blob = largest_blob(&bundle);
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
    let error = verify_fails(&bundle, &public);
    assert!(
        error.contains("symbolic link to \"/etc/passwd\""),
        "{error}"
    );
}

// Archives and parts.

#[test]
fn truncated_archive() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let archive = workspace.pack(&bundle, "lab.tar.zst", None);
    let length = fs::metadata(&archive).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(length - 1000)
        .unwrap();
    let error = verify_fails(&archive, &public);
    assert!(error.contains("lab.tar.zst is truncated"), "{error}");
}

#[test]
fn truncated_part() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let second = workspace.path("lab.tar.zst.part002");
    let length = fs::metadata(&second).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let error = verify_fails(&first, &public);
    assert!(
        error.contains("lab.tar.zst.part002 is truncated"),
        "{error}"
    );
}

#[test]
fn missing_part() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    fs::remove_file(workspace.path("lab.tar.zst.part003")).unwrap();
    let error = verify_fails(&first, &public);
    assert!(error.contains("part 3 of"), "{error}");
    assert!(
        error.contains("lab.tar.zst.part003 does not exist"),
        "{error}"
    );
}

#[test]
fn reordered_parts() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let (second, third) = (
        workspace.path("lab.tar.zst.part002"),
        workspace.path("lab.tar.zst.part003"),
    );
    let swap = workspace.path("swap");
    fs::rename(&second, &swap).unwrap();
    fs::rename(&third, &second).unwrap();
    fs::rename(&swap, &third).unwrap();
    let error = verify_fails(&first, &public);
    assert!(
        error.contains("lab.tar.zst.part002 holds part 3, expected part 2"),
        "{error}"
    );
}

#[test]
fn foreign_part() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let lab = workspace.build("lab", 1, Some(&secret));
    let next = workspace.build("lab-next", 2, Some(&secret));
    let first = workspace.pack(&lab, "lab.tar.zst", Some("256KiB"));
    workspace.pack(&next, "next.tar.zst", Some("256KiB"));
    fs::copy(
        workspace.path("next.tar.zst.part002"),
        workspace.path("lab.tar.zst.part002"),
    )
    .unwrap();
    let error = verify_fails(&first, &public);
    assert!(
        error.contains("lab.tar.zst.part002 belongs to another archive"),
        "{error}"
    );
    assert!(error.contains("lab-next version 2"), "{error}");
}

#[test]
fn extra_part() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let count = fs::read_dir(workspace.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("lab.tar.zst.part")
        })
        .count();
    let stray = workspace.path(&format!("lab.tar.zst.part{:03}", count + 1));
    fs::copy(workspace.path("lab.tar.zst.part002"), &stray).unwrap();
    let error = verify_fails(&first, &public);
    assert!(
        error.contains(&format!("{} is not part of this archive", stray.display())),
        "{error}"
    );
}

#[test]
fn split_archive_named_without_part() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let archive = workspace.path("lab.tar.zst");
    let error = run_fail(
        &[
            "bundle",
            "verify",
            archive.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(error.contains("lab.tar.zst not found"), "{error}");
    assert!(
        error.contains("help: the archive is split; pass its first part"),
        "{error}"
    );
}

#[test]
fn not_first_part() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let error = verify_fails(&workspace.path("lab.tar.zst.part002"), &public);
    assert!(error.contains("is part 2 of"), "{error}");
    assert!(error.contains("pass the first part"), "{error}");
}

#[test]
fn tampered_archive_byte() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let first = workspace.pack(&bundle, "lab.tar.zst", Some("256KiB"));
    let second = workspace.path("lab.tar.zst.part002");
    flip_byte(&second, -5000);
    let unpacked = workspace.path("unpacked");
    let error = run_fail(
        &[
            "bundle",
            "unpack",
            first.to_str().unwrap(),
            "-o",
            unpacked.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        FAILURE,
    );
    // Depending on where the byte lands, zstd's frame checksum, a blob digest or the part digest
    // catches it; each names the archive.
    assert!(error.contains("lab.tar.zst"), "{error}");
    assert!(!unpacked.exists());
}

#[test]
fn tampered_archive_byte_unsplit() {
    let workspace = Workspace::new();
    let (bundle, public) = workspace.signed_bundle();
    let archive = workspace.pack(&bundle, "lab.tar.zst", None);
    flip_byte(&archive, -300_000);
    let error = verify_fails(&archive, &public);
    assert!(error.contains("lab.tar.zst"), "{error}");
    assert!(
        error.contains("checksum")
            || error.contains("digest mismatch")
            || error.contains("corrupt"),
        "{error}"
    );
}

// Hand-made archives with entries that airlock pack never writes.

/// Builds a tar header with a raw path, so that `..` and absolute paths can be written.
fn raw_header(
    path: &[u8],
    entry_type: tar::EntryType,
    size: u64,
    link: Option<&[u8]>,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path);
    if let Some(link) = link {
        header.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header
}

/// Writes an unsigned archive: the bundle's bundle.yaml, then `entries`.
fn crafted_archive(
    workspace: &Workspace,
    name: &str,
    entries: Vec<(tar::Header, Vec<u8>)>,
) -> PathBuf {
    let bundle = workspace.build("lab", 1, None);
    let manifest = fs::read(bundle.join("bundle.yaml")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header(
                b"bundle.yaml",
                tar::EntryType::Regular,
                manifest.len() as u64,
                None,
            ),
            &manifest[..],
        )
        .unwrap();
    for (header, data) in entries {
        builder.append(&header, &data[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let path = workspace.path(name);
    fs::write(&path, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    path
}

/// Asserts that unpacking fails, names the problem, and leaves nothing behind.
fn unpack_rejects(workspace: &Workspace, archive: &Path, expected: &str) {
    let output = workspace.path("unpacked");
    let error = run_fail(
        &[
            "bundle",
            "unpack",
            archive.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--allow-unsigned",
        ],
        FAILURE,
    );
    assert!(error.contains(expected), "{error}");
    assert!(!output.exists(), "unpack left {output:?}");
    let leftovers: Vec<_> = fs::read_dir(workspace.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".unpack-")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
    let error = run_fail(
        &[
            "bundle",
            "verify",
            archive.to_str().unwrap(),
            "--allow-unsigned",
        ],
        FAILURE,
    );
    assert!(error.contains(expected), "{error}");
}

#[test]
fn path_traversal() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "path-traversal.tar.zst",
        vec![(
            raw_header(b"blobs/../../evil", tar::EntryType::Regular, 4, None),
            b"evil".to_vec(),
        )],
    );
    unpack_rejects(
        &workspace,
        &archive,
        "blobs/../../evil: '..' in a path is not allowed",
    );
    assert!(!workspace.dir.path().parent().unwrap().join("evil").exists());
}

#[test]
fn absolute_path() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "absolute-path.tar.zst",
        vec![(
            raw_header(b"/tmp/evil", tar::EntryType::Regular, 4, None),
            b"evil".to_vec(),
        )],
    );
    unpack_rejects(
        &workspace,
        &archive,
        "/tmp/evil: absolute paths are not allowed",
    );
}

#[test]
fn symlink_escape() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "symlink-escape.tar.zst",
        vec![(
            raw_header(
                b"oci-layout",
                tar::EntryType::Symlink,
                0,
                Some(b"/etc/passwd"),
            ),
            Vec::new(),
        )],
    );
    unpack_rejects(&workspace, &archive, "oci-layout in");
    unpack_rejects(&workspace, &archive, "symbolic link to \"/etc/passwd\"");
}

#[test]
fn hardlink_escape() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "hardlink-escape.tar.zst",
        vec![(
            raw_header(
                b"oci-layout",
                tar::EntryType::Link,
                0,
                Some(b"../../etc/shadow"),
            ),
            Vec::new(),
        )],
    );
    unpack_rejects(&workspace, &archive, "hard link to \"../../etc/shadow\"");
}

#[test]
fn device_file() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "device-file.tar.zst",
        vec![(
            raw_header(b"oci-layout", tar::EntryType::Char, 0, None),
            Vec::new(),
        )],
    );
    unpack_rejects(&workspace, &archive, "device file");
}

#[test]
fn fifo_entry() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "fifo.tar.zst",
        vec![(
            raw_header(b"oci-layout", tar::EntryType::Fifo, 0, None),
            Vec::new(),
        )],
    );
    unpack_rejects(&workspace, &archive, "FIFO");
}

#[test]
fn oversized_entry() {
    let workspace = Workspace::new();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.repeat(1000);
    let archive = crafted_archive(
        &workspace,
        "oversized-entry.tar.zst",
        vec![(
            raw_header(
                b"oci-layout",
                tar::EntryType::Regular,
                layout.len() as u64,
                None,
            ),
            layout,
        )],
    );
    unpack_rejects(&workspace, &archive, "oci-layout in");
    unpack_rejects(
        &workspace,
        &archive,
        "is 30000 bytes, larger than the 30 bytes bundle.yaml declares",
    );
}

#[test]
fn unlisted_entry() {
    let workspace = Workspace::new();
    let archive = crafted_archive(
        &workspace,
        "unlisted-entry.tar.zst",
        vec![(
            raw_header(b"blobs/sha256/cafe", tar::EntryType::Regular, 4, None),
            b"cafe".to_vec(),
        )],
    );
    unpack_rejects(&workspace, &archive, "blobs/sha256/cafe in");
    unpack_rejects(&workspace, &archive, "is not listed in bundle.yaml");
}

#[test]
fn manifest_not_first() {
    let workspace = Workspace::new();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append(
            &raw_header(b"oci-layout", tar::EntryType::Regular, 2, None),
            &b"{}"[..],
        )
        .unwrap();
    let archive = workspace.path("manifest-not-first.tar.zst");
    fs::write(
        &archive,
        zstd::encode_all(&builder.into_inner().unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    unpack_rejects(&workspace, &archive, "the first entry is \"oci-layout\"");
}

#[test]
fn not_an_archive() {
    let workspace = Workspace::new();
    let path = workspace.path("notes.txt");
    fs::write(&path, "just text").unwrap();
    let error = run_fail(
        &[
            "bundle",
            "verify",
            path.to_str().unwrap(),
            "--allow-unsigned",
        ],
        FAILURE,
    );
    assert!(error.contains("is not a bundle archive"), "{error}");
}

// Command-line input errors exit with status 2.

#[test]
fn missing_bundle_is_usage_error() {
    let error = run_fail(
        &[
            "bundle",
            "verify",
            "/nonexistent/bundle",
            "--allow-unsigned",
        ],
        USAGE,
    );
    assert!(
        error.contains("bundle /nonexistent/bundle not found"),
        "{error}"
    );
}

#[test]
fn invalid_key_file_is_usage_error() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let key = workspace.path("bad.pub");
    fs::write(&key, "untrusted comment: x\nnot base64\n").unwrap();
    let error = run_fail(
        &[
            "bundle",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(error.contains("invalid minisign public key"), "{error}");
}

#[test]
fn build_into_foreign_directory_is_usage_error() {
    let workspace = Workspace::new();
    let output = workspace.path("notes");
    fs::create_dir_all(&output).unwrap();
    fs::write(output.join("notes.txt"), "not a bundle\n").unwrap();
    let spec = workspace.spec("lab", 1);
    let error = run_fail(
        &[
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(
        error.contains("contains notes.txt, which is not part of a bundle"),
        "{error}"
    );
    assert!(output.join("notes.txt").exists());
}

#[test]
fn rebuild_into_bundle_replaces_it() {
    let workspace = Workspace::new();
    let (public, secret) = workspace.key("signer");
    let bundle = workspace.build("lab", 1, Some(&secret));
    let old_chart = sha256_hex(&fs::read(workspace.path("sources/example-1.0.0.tgz")).unwrap());
    fs::write(
        workspace.path("sources/example-1.0.0.tgz"),
        noise(30, 20 << 10),
    )
    .unwrap();

    let spec = workspace.spec("lab", 2);
    let output = run_ok(&[
        "bundle",
        "build",
        spec.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(output.contains("built bundle lab version 2"), "{output}");
    // The old signature covered the old bundle.yaml, and the old chart is no longer listed.
    assert!(!bundle.join("bundle.yaml.minisig").exists());
    assert!(!bundle.join("blobs/sha256").join(old_chart).exists());
    let verified = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    assert!(
        verified.contains("bundle lab version 2 verified"),
        "{verified}"
    );
}

#[test]
fn spec_typo_names_line_and_column() {
    let workspace = Workspace::new();
    let spec = workspace.spec("lab", 1);
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace("    platform: linux/amd64\n", "    platfrom: linux/amd64\n");
    fs::write(&spec, text).unwrap();
    let output = workspace.path("out");
    let error = run_fail(
        &[
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(error.contains("unknown field `platfrom`"), "{error}");
    assert!(error.contains("line 8 column 5"), "{error}");
    assert!(!output.join("bundle.yaml").exists());
}

#[test]
fn missing_source_file_is_usage_error() {
    let workspace = Workspace::new();
    let spec = workspace.spec("lab", 1);
    fs::remove_file(workspace.path("sources/example-1.0.0.tgz")).unwrap();
    let output = workspace.path("out");
    let error = run_fail(
        &[
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(
        error.contains("artifact example-chart: cannot read"),
        "{error}"
    );
    assert!(error.contains("example-1.0.0.tgz"), "{error}");
}

#[test]
fn unreachable_url_fails_after_retries() {
    let workspace = Workspace::new();
    // A port that nothing listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}/example-1.0.0.tgz");
    let spec = workspace.spec("lab", 1);
    let text = fs::read_to_string(&spec).unwrap().replace(
        "{ file: sources/example-1.0.0.tgz }",
        &format!("{{ url: '{url}' }}"),
    );
    fs::write(&spec, text).unwrap();
    let output = workspace.path("out");
    let error = run_fail(
        &[
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        FAILURE,
    );
    assert!(error.contains(&format!("{url} failed 5 times")), "{error}");
    assert!(
        error.contains("help: check the URL, the network"),
        "{error}"
    );
    assert!(!output.join("bundle.yaml").exists());
}

#[test]
fn shared_install_path_is_usage_error() {
    let workspace = Workspace::new();
    let spec = workspace.spec("lab", 1);
    let text = fs::read_to_string(&spec).unwrap().replace(
        "{ name: example-chart, kind: chart, source: { file: sources/example-1.0.0.tgz } }",
        "{ name: example-chart, kind: chart, source: { file: sources/example-1.0.0.tgz }, \
         install: { path: '<data-dir>/manifests/example/example.yaml', mode: '0644', hosts: controllers } }",
    );
    fs::write(&spec, text).unwrap();
    let output = workspace.path("out");
    let error = run_fail(
        &[
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(
        error.contains("are both installed to <data-dir>/manifests/example/example.yaml"),
        "{error}"
    );
    assert!(!output.join("bundle.yaml").exists());
}

#[test]
fn split_size_below_minimum_is_usage_error() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let archive = workspace.path("lab.tar.zst");
    let error = run_fail(
        &[
            "bundle",
            "pack",
            bundle.to_str().unwrap(),
            "-o",
            archive.to_str().unwrap(),
            "--split-size",
            "4KiB",
        ],
        USAGE,
    );
    assert!(error.contains("below the minimum"), "{error}");
}

#[test]
fn key_generate_refuses_to_overwrite() {
    let workspace = Workspace::new();
    workspace.key("signer");
    let prefix = workspace.path("signer");
    let before = fs::read(workspace.path("signer.key")).unwrap();
    let error = run_fail(
        &[
            "key",
            "generate",
            "--unencrypted",
            "-o",
            prefix.to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(fs::read(workspace.path("signer.key")).unwrap(), before);
}

#[test]
fn encrypted_key_without_password_is_usage_error() {
    let workspace = Workspace::new();
    let prefix = workspace.path("enc");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["key", "generate", "-o", prefix.to_str().unwrap()])
        .env("AIRLOCK_KEY_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bundle = workspace.build("lab", 1, None);
    // Standard input is not a terminal here, so airlock cannot prompt.
    let error = run_fail(
        &[
            "bundle",
            "sign",
            bundle.to_str().unwrap(),
            "--secret-key",
            workspace.path("enc.key").to_str().unwrap(),
        ],
        USAGE,
    );
    assert!(
        error.contains("standard input is not a terminal"),
        "{error}"
    );
    assert!(error.contains("AIRLOCK_KEY_PASSWORD"), "{error}");
}

#[test]
fn pack_into_missing_directory_fails_without_hanging() {
    let workspace = Workspace::new();
    let bundle = workspace.build("lab", 1, None);
    let output = workspace.path("missing/lab.tar.zst");
    // Small parts once made the tar thread block forever on a full queue after the part writer
    // failed. `timeout` turns such a hang into exit status 124.
    let result = tool(
        "timeout",
        &[
            "60",
            env!("CARGO_BIN_EXE_airlock"),
            "bundle",
            "pack",
            bundle.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--split-size",
            "128KiB",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lab.tar.zst.part001"), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}
