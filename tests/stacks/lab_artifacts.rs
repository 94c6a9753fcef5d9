//! `scripts/lab-stack-artifacts`: its chart archives read back with GNU tar, its image layouts
//! with skopeo, and its output compared byte for byte between two runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helm_subset::charts_dir;
use crate::scenario::bundle;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One run of the generator (a quarter of a second): its output folder and `index.json`.
struct Generated {
    _dir: tempfile::TempDir,
    stacks: PathBuf,
    index: Value,
}

fn generate(outdir: &Path) -> PathBuf {
    let output = Command::new(format!("{ROOT}/scripts/lab-stack-artifacts"))
        .arg(outdir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/lab-stack-artifacts failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    outdir.join("stacks")
}

fn generated() -> Generated {
    let dir = tempfile::tempdir().unwrap();
    let stacks = generate(dir.path());
    let index = serde_json::from_slice(&std::fs::read(stacks.join("index.json")).unwrap()).unwrap();
    Generated {
        _dir: dir,
        stacks,
        index,
    }
}

fn entries<'a>(index: &'a Value, field: &str) -> &'a Vec<Value> {
    index[field].as_array().unwrap()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

/// Reads every file below `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

/// Returns every image reference of `images/*.yaml`, as the lab carries it.
fn listed_images() -> BTreeSet<String> {
    bundle()
        .images
        .into_iter()
        .map(|image| image.reference)
        .collect()
}

#[test]
fn generator_output_is_deterministic() {
    let first = generated();
    let again = tempfile::tempdir().unwrap();
    let second = generate(again.path());
    let (first, second) = (tree(&first.stacks), tree(&second));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &first {
        assert!(
            second[path] == *bytes,
            "{} differs between runs",
            path.display()
        );
    }
}

#[test]
fn chart_archives_are_reproducible() {
    let artifacts = generated();
    let charts = entries(&artifacts.index, "charts");
    let names: BTreeSet<&str> = charts.iter().map(|chart| text(&chart["name"])).collect();
    let expected = [
        "gpu-operator",
        "kube-prometheus-stack",
        "kyverno",
        "local-path-provisioner",
        "loki",
        "opentelemetry-collector",
    ];
    assert_eq!(names, BTreeSet::from(expected));

    for chart in charts {
        let (name, version) = (text(&chart["name"]), text(&chart["version"]));
        let archive = artifacts.stacks.join(text(&chart["archive"]));
        let bytes = std::fs::read(&archive).unwrap();
        assert_eq!(
            airlock::digest::Digest::of_bytes(&bytes).to_string(),
            format!("sha256:{}", text(&chart["sha256"])),
            "{name} {version}: index sha256"
        );
        assert_eq!(
            &bytes[..3],
            [0x1f, 0x8b, 8],
            "{name} {version}: a gzip stream"
        );
        assert_eq!(
            bytes[3], 0,
            "{name} {version}: gzip header flags (no file name)"
        );
        assert_eq!(&bytes[4..8], [0; 4], "{name} {version}: gzip header mtime");

        let listing = Command::new("tar")
            .args([
                "--list",
                "--verbose",
                "--numeric-owner",
                "--full-time",
                "-zf",
            ])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            listing.status.success(),
            "tar cannot read {}",
            archive.display()
        );
        let listing = String::from_utf8(listing.stdout).unwrap();
        let mut paths = Vec::new();
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[0], "-rw-r--r--", "{name} {version}: mode of {line}");
            assert_eq!(fields[1], "0/0", "{name} {version}: owner of {line}");
            assert_eq!(
                (fields[3], fields[4]),
                ("1970-01-01", "00:00:00"),
                "{name} {version}: mtime of {line}"
            );
            paths.push(fields[5].to_string());
        }

        // The archive contains the version's Chart.yaml and values.yaml, then the shared
        // templates in name order, each byte for byte.
        let source = charts_dir().join(name);
        let mut expected = vec![
            (
                format!("{name}/Chart.yaml"),
                source.join(version).join("Chart.yaml"),
            ),
            (
                format!("{name}/values.yaml"),
                source.join(version).join("values.yaml"),
            ),
        ];
        let mut templates: Vec<PathBuf> = std::fs::read_dir(source.join("templates"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        templates.sort();
        for template in templates {
            let file_name = template.file_name().unwrap().to_str().unwrap().to_string();
            expected.push((format!("{name}/templates/{file_name}"), template));
        }
        let expected_paths: Vec<&str> = expected.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, expected_paths, "{name} {version}: archive entries");

        let unpacked = tempfile::tempdir().unwrap();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(unpacked.path())
            .status()
            .unwrap();
        assert!(status.success());
        for (path, source) in expected {
            assert_eq!(
                std::fs::read(unpacked.path().join(&path)).unwrap(),
                std::fs::read(&source).unwrap(),
                "{name} {version}: {path}"
            );
        }
    }
}

#[test]
fn image_layouts_open_with_skopeo() {
    let artifacts = generated();
    let images = entries(&artifacts.index, "images");
    let references: BTreeSet<String> = images
        .iter()
        .map(|image| text(&image["reference"]).to_string())
        .collect();

    // Every image the stacks list, and every image a stand-in runs by default.
    for listed in listed_images() {
        assert!(references.contains(&listed), "no layout for {listed}");
    }
    for field in ["charts", "manifests"] {
        for entry in entries(&artifacts.index, field) {
            for image in entry["images"].as_array().unwrap() {
                assert!(references.contains(text(image)), "no layout for {image}");
            }
        }
    }

    for image in images {
        let reference = text(&image["reference"]);
        let layout = artifacts.stacks.join(text(&image["layout"]));
        let output = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{reference}", layout.display()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(inspected["Digest"], image["digest"], "{reference}: digest");
        assert_eq!(inspected["Os"], "linux", "{reference}: os");
        assert_eq!(
            inspected["Architecture"], "amd64",
            "{reference}: architecture"
        );
        assert_eq!(
            inspected["Layers"].as_array().map(Vec::len),
            Some(1),
            "{reference}: layers"
        );
    }

    // skopeo finds the image only under its own reference name.
    let first = &images[0];
    let output = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci:{}:{}-other",
            artifacts.stacks.join(text(&first["layout"])).display(),
            text(&first["reference"])
        ))
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a reference the layout lacks was found"
    );
}

#[test]
fn stand_in_versions_match_the_bundle() {
    let artifacts = generated();
    let listed = listed_images();
    let bundled: BTreeSet<(String, String)> = bundle()
        .charts
        .into_iter()
        .map(|chart| (chart.name, chart.version))
        .collect();

    let mut versions: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for chart in entries(&artifacts.index, "charts") {
        versions
            .entry(text(&chart["name"]))
            .or_default()
            .push(chart);
    }
    for (name, charts) in versions {
        assert_eq!(
            charts.len(),
            2,
            "{name}: two versions, the second for upgrade tests"
        );
        let (first, second) = (charts[0], charts[1]);
        assert!(
            bundled.contains(&(name.to_string(), text(&first["version"]).to_string())),
            "{name} {}: the bundle of the test scenarios carries another version",
            first["version"]
        );
        // With its defaults the first version runs only listed images; the second moves on.
        for image in first["images"].as_array().unwrap() {
            assert!(
                listed.contains(text(image)),
                "{name}: {image} is not in images/"
            );
        }
        assert_ne!(
            first["images"], second["images"],
            "{name}: the upgrade changes no image"
        );
    }

    let manifests = entries(&artifacts.index, "manifests");
    let versions: Vec<&str> = manifests
        .iter()
        .map(|manifest| text(&manifest["version"]))
        .collect();
    assert_eq!(versions, ["v1.9.0", "v1.9.1"]);
    for image in manifests[0]["images"].as_array().unwrap() {
        assert!(
            listed.contains(text(image)),
            "kubevirt: {image} is not in images/"
        );
    }
}
