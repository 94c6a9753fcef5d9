//! `airlock media create` and `airlock media verify`: media written into a folder in place
//! of a mounted stick or into a disk image, checked with coreutils' sha256sum, dosfstools and
//! mtools, damaged on purpose, interrupted and resumed, and used to install a lab.

mod common;

#[allow(dead_code)]
#[path = "bundle/fixtures.rs"]
mod fixtures;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::apply::{SignedBundle, airlock, cluster_file, ready_nodes};
use common::{Lab, describe, stderr};
use fixtures::{Workspace, flip_byte};

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
        "site.pub",
        "INSTALL.txt",
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

    let install = fs::read_to_string(media.path().join("INSTALL.txt")).unwrap();
    assert!(install.contains("./airlock media verify ."), "{install}");
    assert!(
        install.contains("./airlock apply -c /path/to/k0sctl.yaml"),
        "{install}"
    );

    // The binary on the media verifies the bundle on the media.
    let verify = Command::new(media.path().join("airlock"))
        .args(["bundle", "verify", "lab-1.tar.zst", "--key", "site.pub"])
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

/// A bundle large enough to split into several 512 KiB parts, signed, and its key pair.
struct SplitBundle {
    workspace: Workspace,
    bundle: PathBuf,
    public_key: PathBuf,
    secret_key: PathBuf,
}

impl SplitBundle {
    fn build() -> SplitBundle {
        let workspace = Workspace::new();
        let (public_key, secret_key) = workspace.key("signer");
        let bundle = workspace.build("lab", 1, Some(&secret_key));
        SplitBundle {
            workspace,
            bundle,
            public_key,
            secret_key,
        }
    }

    /// Returns the `media create` command for these media, signed, with parts of 512 KiB.
    fn create_command(&self) -> Command {
        let mut command = airlock();
        command
            .args(["media", "create", "--bundle"])
            .arg(&self.bundle)
            .arg("--key")
            .arg(&self.public_key)
            .arg("--sign")
            .arg(&self.secret_key)
            .args(["--split-size", "512KiB"])
            .env_remove("AIRLOCK_KEY_PASSWORD");
        command
    }

    /// Writes signed media into a new folder and returns it.
    fn create_folder(&self, name: &str) -> PathBuf {
        let media = self.workspace.path(name);
        fs::create_dir_all(&media).unwrap();
        let output = self
            .create_command()
            .arg("-o")
            .arg(&media)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        media
    }

    fn verify(&self, media: &Path) -> std::process::Output {
        airlock()
            .args(["media", "verify"])
            .arg(media)
            .arg("--key")
            .arg(&self.public_key)
            .output()
            .unwrap()
    }
}

/// Names listed in a SHA256SUMS file.
fn listed_names(sums: &Path) -> Vec<String> {
    fs::read_to_string(sums)
        .unwrap()
        .lines()
        .map(|line| line.split_once("  ").unwrap().1.to_string())
        .collect()
}

fn sha256sum_check(dir: &Path) {
    let check = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", describe(&check));
}

/// Returns the byte offset and size of the first partition of an MBR disk image.
fn first_partition_offset(image: &Path) -> (u64, u64) {
    let mut sector = [0u8; 512];
    std::io::Read::read_exact(&mut fs::File::open(image).unwrap(), &mut sector).unwrap();
    assert_eq!(&sector[510..], &[0x55, 0xAA], "no MBR boot signature");
    let entry = &sector[446..462];
    assert_eq!(entry[4], 0x0C, "partition type is not FAT32 (LBA)");
    let start = u32::from_le_bytes(entry[8..12].try_into().unwrap());
    let sectors = u32::from_le_bytes(entry[12..16].try_into().unwrap());
    (u64::from(start) * 512, u64::from(sectors) * 512)
}

fn require_tool(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{program} is missing: run scripts/setup (it installs dosfstools and mtools)"
    );
}

#[test]
fn disk_image_passes_fsck_and_mtools() {
    for program in ["fsck.vfat", "mdir", "mcopy"] {
        require_tool(program);
    }
    let fixture = SplitBundle::build();
    let cluster = fixture.workspace.path("site.yaml");
    fs::write(&cluster, "apiVersion: k0sctl.k0sproject.io/v1beta1\n").unwrap();
    let image = fixture.workspace.path("media.img");
    let output = fixture
        .create_command()
        .arg("--image")
        .arg(&image)
        .args(["--size", "160MiB", "-c"])
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(fs::metadata(&image).unwrap().len(), 160 << 20);
    assert!(
        !fixture.workspace.path("media.img.files").exists(),
        "the staging folder is left behind"
    );

    // fsck.vfat reads a file system, not a partitioned disk, so the partition is cut out.
    let (offset, size) = first_partition_offset(&image);
    let partition = fixture.workspace.path("partition.vfat");
    let bytes = fs::read(&image).unwrap();
    fs::write(
        &partition,
        &bytes[offset as usize..(offset + size) as usize],
    )
    .unwrap();
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&partition)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}", describe(&fsck));

    let drive = format!("{}@@{offset}", image.display());
    let mdir = Command::new("mdir")
        .args(["-i", &drive, "-/", "-b", "::"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(mdir.status.success(), "{}", describe(&mdir));
    let mut on_image: Vec<String> = common::stdout(&mdir)
        .lines()
        .filter(|line| !line.ends_with('/'))
        .map(|line| line.trim_start_matches("::/").to_string())
        .collect();
    on_image.sort();

    let copies = fixture.workspace.path("copies");
    fs::create_dir_all(&copies).unwrap();
    for name in &on_image {
        let copy = Command::new("mcopy")
            .args(["-i", &drive, &format!("::{name}")])
            .arg(copies.join(name))
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(copy.status.success(), "{name}: {}", describe(&copy));
    }
    let mut expected = listed_names(&copies.join("SHA256SUMS"));
    assert!(expected.len() >= 7, "{expected:?}");
    assert!(
        expected.iter().any(|name| name == "k0sctl.yaml"),
        "{expected:?}"
    );
    assert!(
        expected.iter().any(|name| name == "lab-1.tar.zst.part003"),
        "{expected:?}"
    );
    expected.extend(["SHA256SUMS".to_string(), "SHA256SUMS.minisig".to_string()]);
    expected.sort();
    assert_eq!(on_image, expected, "files on the image");
    sha256sum_check(&copies);
    let minisign = Command::new("minisign")
        .args(["-V", "-q", "-m", "SHA256SUMS", "-p"])
        .arg(&fixture.public_key)
        .current_dir(&copies)
        .output()
        .unwrap();
    assert!(minisign.status.success(), "{}", describe(&minisign));

    let verify = fixture.verify(&image);
    assert!(verify.status.success(), "{}", describe(&verify));
    assert!(
        stderr(&verify).contains("signed by trusted key"),
        "{}",
        stderr(&verify)
    );
    assert!(
        stderr(&verify).contains("bundle lab-1.tar.zst.part001 verified"),
        "{}",
        stderr(&verify)
    );
    let scratch: Vec<_> = fs::read_dir(fixture.workspace.path(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".airlock-verify-"))
        .collect();
    assert!(scratch.is_empty(), "scratch folders left: {scratch:?}");
}

/// A change made to a copy of the media.
type Damage<'a> = Box<dyn Fn(&Path) + 'a>;

#[test]
fn verify_names_the_bad_file() {
    let fixture = SplitBundle::build();
    let media = fixture.create_folder("media");
    let good = fixture.verify(&media);
    assert!(good.status.success(), "{}", describe(&good));
    assert!(media.join("lab-1.tar.zst.part003").exists());

    let other = fixture.workspace.key("other");
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "flipped byte in a part",
            Box::new(|dir| flip_byte(&dir.join("lab-1.tar.zst.part002"), 5000)),
            "lab-1.tar.zst.part002 has digest",
        ),
        (
            "missing part",
            Box::new(|dir| fs::remove_file(dir.join("lab-1.tar.zst.part002")).unwrap()),
            "lab-1.tar.zst.part002 is listed in SHA256SUMS but missing",
        ),
        (
            "extra file",
            Box::new(|dir| fs::write(dir.join("notes.txt"), "hello").unwrap()),
            "notes.txt is on the media but not listed in SHA256SUMS",
        ),
        (
            "changed SHA256SUMS",
            Box::new(|dir| {
                let sums = dir.join("SHA256SUMS");
                let text = fs::read_to_string(&sums)
                    .unwrap()
                    .replace("INSTALL", "INSTALL2");
                fs::remove_file(&sums).unwrap();
                fs::write(&sums, text).unwrap();
            }),
            "SHA256SUMS.minisig does not match SHA256SUMS",
        ),
        (
            "signature by another key",
            Box::new(|dir| {
                let output = Command::new("minisign")
                    .args(["-S", "-s"])
                    .arg(&other.1)
                    .arg("-m")
                    .arg(dir.join("SHA256SUMS"))
                    .arg("-x")
                    .arg(dir.join("signature"))
                    .output()
                    .unwrap();
                assert!(output.status.success(), "{}", describe(&output));
                fs::remove_file(dir.join("SHA256SUMS.minisig")).unwrap();
                fs::rename(dir.join("signature"), dir.join("SHA256SUMS.minisig")).unwrap();
            }),
            "which is not trusted",
        ),
        (
            "unsigned SHA256SUMS",
            Box::new(|dir| fs::remove_file(dir.join("SHA256SUMS.minisig")).unwrap()),
            "SHA256SUMS is not signed",
        ),
    ];
    for (case, damage, expected) in cases {
        // Hard links share the large airlock binary; a damaged file is replaced, never edited
        // in place, so the original media stays intact.
        let copy = fixture
            .workspace
            .path(&format!("copy-{}", case.replace(' ', "-")));
        let cp = Command::new("cp")
            .arg("-al")
            .arg(&media)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(cp.status.success(), "{}", describe(&cp));
        let part = copy.join("lab-1.tar.zst.part002");
        let bytes = fs::read(&part).unwrap();
        fs::remove_file(&part).unwrap();
        fs::write(&part, bytes).unwrap();

        damage(&copy);
        let output = fixture.verify(&copy);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{case}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{case}: expected {expected:?} in\n{}",
            stderr(&output)
        );
    }
    let still_good = fixture.verify(&media);
    assert!(still_good.status.success(), "{}", describe(&still_good));
}

#[test]
fn interrupted_create_continues_and_verifies() {
    let fixture = SplitBundle::build();
    let media = fixture.workspace.path("media");
    fs::create_dir_all(&media).unwrap();
    let journal = media.join(".SHA256SUMS.partial");

    // Kill the run as soon as the journal records the packed bundle: the binary, the keys,
    // INSTALL.txt and SHA256SUMS are still to come.
    let mut child = fixture
        .create_command()
        .arg("-o")
        .arg(&media)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = fs::read_to_string(&journal).unwrap_or_default();
        if text.contains(".part001\n") {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "media create ended before it wrote the bundle"
        );
        assert!(
            Instant::now() < deadline,
            "the journal never listed the bundle"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !media.join("SHA256SUMS").exists(),
        "media create finished before it could be killed"
    );
    let incomplete = fixture.verify(&media);
    assert_eq!(
        incomplete.status.code(),
        Some(1),
        "{}",
        describe(&incomplete)
    );
    assert!(
        stderr(&incomplete).contains("has no SHA256SUMS"),
        "{}",
        stderr(&incomplete)
    );

    let rerun = fixture
        .create_command()
        .arg("-o")
        .arg(&media)
        .output()
        .unwrap();
    assert!(rerun.status.success(), "{}", describe(&rerun));
    assert!(
        stderr(&rerun).contains("lab-1.tar.zst.part001: already on the media, matches"),
        "{}",
        stderr(&rerun)
    );
    assert!(
        stderr(&rerun).contains("already complete from an earlier run"),
        "{}",
        stderr(&rerun)
    );
    assert!(!journal.exists(), "the journal is left behind");
    let leftovers: Vec<_> = fs::read_dir(&media)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let verify = fixture.verify(&media);
    assert!(verify.status.success(), "{}", describe(&verify));
    sha256sum_check(&media);
}

#[test]
fn interrupted_create_rewrites_a_damaged_part() {
    let fixture = SplitBundle::build();
    let media = fixture.create_folder("media");
    // Turn finished media back into an interrupted run whose journal lists every file, then
    // damage a part the journal claims is complete.
    let sums = fs::read_to_string(media.join("SHA256SUMS")).unwrap();
    let digest = bundle_yaml_digest(&fixture.bundle);
    fs::write(
        media.join(".SHA256SUMS.partial"),
        format!("# bundle {digest}\n{sums}"),
    )
    .unwrap();
    fs::remove_file(media.join("SHA256SUMS")).unwrap();
    flip_byte(&media.join("lab-1.tar.zst.part002"), 5000);

    let rerun = fixture
        .create_command()
        .arg("-o")
        .arg(&media)
        .output()
        .unwrap();
    assert!(rerun.status.success(), "{}", describe(&rerun));
    assert!(
        !stderr(&rerun).contains("lab-1.tar.zst.part002: already on the media"),
        "{}",
        stderr(&rerun)
    );
    assert!(
        stderr(&rerun).contains("airlock: already on the media, matches"),
        "{}",
        stderr(&rerun)
    );
    let verify = fixture.verify(&media);
    assert!(verify.status.success(), "{}", describe(&verify));
}

fn bundle_yaml_digest(bundle: &Path) -> String {
    fixtures::sha256_hex(&fs::read(bundle.join("bundle.yaml")).unwrap())
}

#[test]
fn image_size_below_minimum_is_usage_error() {
    let fixture = SplitBundle::build();
    let image = fixture.workspace.path("small.img");
    let output = fixture
        .create_command()
        .arg("--image")
        .arg(&image)
        .args(["--size", "1MiB"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("image size"),
        "{}",
        stderr(&output)
    );
    assert!(!image.exists());
}

#[test]
fn existing_file_is_not_overwritten_by_an_image() {
    let fixture = SplitBundle::build();
    let image = fixture.workspace.path("precious.tar.gz");
    std::fs::write(&image, b"not an image").unwrap();
    let output = fixture
        .create_command()
        .arg("--image")
        .arg(&image)
        .args(["--size", "64MiB"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&image).unwrap(), b"not an image");
}

#[test]
fn folder_with_foreign_file_is_rejected() {
    let fixture = SplitBundle::build();
    let media = fixture.workspace.path("media");
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("holiday.jpg"), "").unwrap();
    let output = fixture
        .create_command()
        .arg("-o")
        .arg(&media)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        stderr(&output).contains("contains holiday.jpg, which is not airlock media"),
        "{}",
        stderr(&output)
    );
}

/// Writes media for `bundle` with `cluster` into a new folder.
fn media_for(bundle: &SignedBundle, cluster: &Path) -> tempfile::TempDir {
    let media = tempfile::tempdir().unwrap();
    let create = airlock()
        .args(["media", "create", "--bundle"])
        .arg(&bundle.bundle)
        .arg("-o")
        .arg(media.path())
        .arg("-c")
        .arg(cluster)
        .arg("--key")
        .arg(&bundle.public_key)
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", describe(&create));
    media
}

/// Runs `command` of the airlock binary on `media` without --bundle or -c, from an empty
/// folder so that nothing is found in the working directory.
fn run_from_media(lab: &Lab, media: &Path, command: &str, extra: &[&str]) -> std::process::Output {
    let elsewhere = tempfile::tempdir().unwrap();
    Command::new(media.join("airlock"))
        .arg(command)
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .arg("--out")
        .arg(lab.dir.join("out"))
        .args(["--ready-timeout", "60s", "--connect-timeout", "3s"])
        .args(extra)
        .current_dir(elsewhere.path())
        .output()
        .unwrap()
}

fn assert_picked(output: &std::process::Output, media: &Path, bundle: &str) {
    let text = stderr(output);
    let picked_bundle = format!(
        "using the bundle {} beside the airlock binary",
        media.join(bundle).display()
    );
    assert!(text.contains(&picked_bundle), "{text}");
    let picked_cluster = format!(
        "using the cluster file {} beside the airlock binary",
        media.join("k0sctl.yaml").display()
    );
    assert!(text.contains(&picked_cluster), "{text}");
}

#[test]
fn apply_and_upgrade_run_from_media() {
    let Some(lab) = Lab::start_with(
        "apply_and_upgrade_run_from_media",
        1,
        &["--roles", "single"],
    ) else {
        return;
    };
    let mut bundles = SignedBundle::build_all(&["bundles/lab.yaml", "bundles/lab-next.yaml"]);
    let next = bundles.pop().unwrap();
    let first = bundles.pop().unwrap();
    let cluster = cluster_file(&lab, &first, "");

    let media = media_for(&first, &cluster);
    let apply = run_from_media(&lab, media.path(), "apply", &[]);
    assert!(apply.status.success(), "{}", describe(&apply));
    assert_picked(&apply, media.path(), "lab-1.tar.zst");
    assert_eq!(ready_nodes(&lab, "lab-1"), vec!["lab-1".to_string()]);

    // Run from the media folder itself, apply writes its default airlock-out/ onto the media,
    // and the media still verifies.
    std::fs::create_dir(media.path().join("airlock-out")).unwrap();
    std::fs::write(media.path().join("airlock-out/audit.log"), "{}\n").unwrap();
    let verify = airlock()
        .args(["media", "verify"])
        .arg(media.path())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", describe(&verify));

    let next_media = media_for(&next, &cluster);
    let upgrade = run_from_media(&lab, next_media.path(), "upgrade", &["--dry-run"]);
    assert!(upgrade.status.success(), "{}", describe(&upgrade));
    assert_picked(&upgrade, next_media.path(), "lab-2.tar.zst");
    assert!(
        stderr(&upgrade).contains("k0s v1.35.3+k0s.0 -> v1.36.3+k0s.0"),
        "{}",
        stderr(&upgrade)
    );
}

#[test]
fn apply_without_bundle_beside_binary_is_usage_error() {
    let cluster = common::repo_dir().join("tests/fixtures/config/valid/single-host.yaml");
    let output = airlock()
        .arg("apply")
        .arg("-c")
        .arg(&cluster)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        stderr(&output).contains("no --bundle given, and no bundle"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn image_too_small_then_rerun_reuses_files() {
    let fixture = SplitBundle::build();
    let image = fixture.workspace.path("media.img");
    let too_small = fixture
        .create_command()
        .arg("--image")
        .arg(&image)
        .args(["--size", "48MiB"])
        .output()
        .unwrap();
    assert_eq!(too_small.status.code(), Some(1), "{}", describe(&too_small));
    assert!(
        stderr(&too_small).contains("cannot write the disk image"),
        "{}",
        stderr(&too_small)
    );
    assert!(!image.exists(), "a partial image was renamed into place");
    assert!(
        !fixture.workspace.path("media.img.partial").exists(),
        "the partial image is left behind"
    );

    let rerun = fixture
        .create_command()
        .arg("--image")
        .arg(&image)
        .args(["--size", "160MiB"])
        .output()
        .unwrap();
    assert!(rerun.status.success(), "{}", describe(&rerun));
    assert!(
        stderr(&rerun).contains("airlock: already on the media, matches"),
        "{}",
        stderr(&rerun)
    );
    let verify = fixture.verify(&image);
    assert!(verify.status.success(), "{}", describe(&verify));
}
