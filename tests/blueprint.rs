//! The blueprint after `airlock apply` on lab hosts with every stack. The tests compare the record
//! with what the hosts contain and with the controller's copies, check the signatures with
//! minisign and the SBOM with pyspdxtools, open the report in headless Chromium without network,
//! and read the blueprint back with `blueprint show`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::apply::{SignedBundle, TENANTS, airlock, apply_command, cluster_file, kubectl, run_ok};
use common::{Lab, describe, repo_dir, stdout};
use serde_json::Value;

/// A lab with a GPU on lab-3 where apply installed every stack and signed the blueprint.
struct Applied {
    lab: Lab,
    bundle: SignedBundle,
    cluster: PathBuf,
    out: PathBuf,
    signing_key: PathBuf,
}

fn applied(test: &str) -> Option<Applied> {
    let lab = Lab::start(test, 3)?;
    assert!(lab.run(&["gpu", "lab-3"]).status.success());
    let bundle = SignedBundle::build("bundles/lab.yaml");
    let cluster = cluster_file(&lab, &bundle, TENANTS);
    // The blueprint is signed with a key of its own, as a site would keep the bundle signer's
    // key at the office.
    let prefix = lab.dir.join("operator");
    run_ok(
        airlock()
            .args(["key", "generate", "--unencrypted", "-o"])
            .arg(&prefix),
    );
    let signing_key = prefix.with_extension("key");
    let output = apply_command(&lab, &cluster, &bundle.bundle)
        .args(["--stack-timeout", "60s", "--sign-blueprint"])
        .arg(&signing_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let out = lab.dir.join("out");
    Some(Applied {
        lab,
        bundle,
        cluster,
        out,
        signing_key,
    })
}

fn blueprint_json(out: &Path) -> Value {
    let text = fs::read_to_string(out.join("blueprint.yaml")).unwrap();
    yaml_serde::from_str(&text).unwrap()
}

fn sha256_on(lab: &Lab, host: &str, path: &str) -> String {
    let output = lab.ssh_root(host, &format!("sha256sum '{path}'"));
    assert!(output.status.success(), "{host}: {}", describe(&output));
    format!(
        "sha256:{}",
        stdout(&output).split_whitespace().next().unwrap()
    )
}

#[test]
fn blueprint_matches_what_the_hosts_hold() {
    let Some(applied) = applied("blueprint_matches_what_the_hosts_hold") else {
        return;
    };
    let lab = &applied.lab;
    let blueprint = blueprint_json(&applied.out);

    let nodes = blueprint["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["lab-1", "lab-2", "lab-3"]);
    let mut checked = 0;
    for node in nodes {
        let host = node["name"].as_str().unwrap();
        let files = node["files"].as_object().unwrap();
        assert!(!files.is_empty(), "{host} has no recorded files");
        for (path, digest) in files {
            assert_eq!(
                sha256_on(lab, host, path),
                digest.as_str().unwrap(),
                "{host}:{path}"
            );
            checked += 1;
        }
        assert_eq!(node["k0sVersion"], "v1.35.3+k0s.0", "{host}");
    }
    assert!(checked >= 20, "only {checked} files recorded");

    let uid = kubectl(
        lab,
        "lab-1",
        "get -n kube-system namespace kube-system -o 'template={{.metadata.uid}}'",
    );
    assert_eq!(blueprint["cluster"]["id"], uid.trim());
    assert_eq!(blueprint["bundle"]["signature"], "trusted");
    assert_eq!(
        blueprint["k0s"]["configDigests"]["lab-1"].as_str().unwrap(),
        sha256_on(lab, "lab-1", "/etc/k0s/k0s.yaml")
    );
    assert_eq!(
        blueprint["residency"]["labelledNodes"],
        serde_json::json!(["lab-2", "lab-3"])
    );
    assert_eq!(blueprint["nodes"][2]["gpus"][0]["deviceId"], "2331");
    let tenants: Vec<&str> = blueprint["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["research", "clinic"]);

    let stacks = blueprint["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 5);
    for stack in stacks {
        assert_eq!(stack["ready"], true, "{}", stack["name"]);
        for chart in stack["charts"].as_array().unwrap() {
            let path = chart["path"].as_str().unwrap();
            assert_eq!(
                sha256_on(lab, "lab-1", path),
                chart["digest"].as_str().unwrap()
            );
        }
    }
    let policies = blueprint["policies"].as_array().unwrap();
    assert!(policies.len() >= 5, "{policies:?}");
    for policy in policies {
        let name = policy["name"].as_str().unwrap();
        assert!(
            policy["description"].as_str().unwrap().len() > 20,
            "{name} has no description"
        );
        kubectl(
            lab,
            "lab-1",
            &format!("get validatingadmissionpolicy {name}"),
        );
    }

    // Every control passes on a cluster with every stack, residency and tenants.
    for control in blueprint["compliance"].as_array().unwrap() {
        assert_eq!(control["result"], "pass", "{control}");
    }

    // The audit head the blueprint records is the last line of the log.
    let log = fs::read_to_string(applied.out.join("audit.log")).unwrap();
    let last = log.lines().last().unwrap();
    let last_digest = format!(
        "sha256:{}",
        stdout(&run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("printf '%s' \"$LINE\" | sha256sum")
                .env("LINE", last)
        ))
        .split_whitespace()
        .next()
        .unwrap()
    );
    assert_eq!(blueprint["auditLog"]["head"], last_digest.as_str());
    assert_eq!(blueprint["auditLog"]["entries"], log.lines().count());
}

#[test]
fn controllers_hold_the_same_records() {
    let Some(applied) = applied("controllers_hold_the_same_records") else {
        return;
    };
    let lab = &applied.lab;
    for name in [
        "blueprint.yaml",
        "report.html",
        "sbom.spdx.json",
        "audit.log",
        "audit.log.head",
        "blueprint.yaml.minisig",
        "audit.log.head.minisig",
    ] {
        let remote = lab.ssh_root("lab-1", &format!("cat /var/lib/k0s/airlock/{name}"));
        assert!(remote.status.success(), "{name}: {}", describe(&remote));
        assert_eq!(
            remote.stdout,
            fs::read(applied.out.join(name)).unwrap(),
            "{name} differs on lab-1"
        );
    }
    for worker in ["lab-2", "lab-3"] {
        let missing = lab.ssh_root(worker, "test ! -e /var/lib/k0s/airlock/blueprint.yaml");
        assert!(missing.status.success(), "{worker} holds a blueprint");
    }

    let shown = run_ok(
        airlock()
            .args(["blueprint", "show", "-o", "json", "-c"])
            .arg(&applied.cluster)
            .arg("--known-hosts")
            .arg(lab.known_hosts()),
    );
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown, blueprint_json(&applied.out));
    let yaml = run_ok(
        airlock()
            .args(["blueprint", "show", "-c"])
            .arg(&applied.cluster)
            .arg("--known-hosts")
            .arg(lab.known_hosts()),
    );
    assert_eq!(
        yaml.stdout,
        fs::read(applied.out.join("blueprint.yaml")).unwrap()
    );

    // minisign itself accepts both signatures with the operator's public key.
    let public_key = applied.signing_key.with_extension("pub");
    for name in ["blueprint.yaml", "audit.log.head"] {
        let output = Command::new("minisign")
            .arg("-Vm")
            .arg(applied.out.join(name))
            .arg("-p")
            .arg(&public_key)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}: {}", describe(&output));
    }
    // The bundle signer's key is not the operator's, so it must not verify the blueprint.
    let wrong = Command::new("minisign")
        .arg("-Vm")
        .arg(applied.out.join("blueprint.yaml"))
        .arg("-p")
        .arg(&applied.bundle.public_key)
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "{}", describe(&wrong));

    let verified = run_ok(
        airlock()
            .args(["audit", "verify"])
            .arg(applied.out.join("audit.log"))
            .arg("--key")
            .arg(&public_key),
    );
    assert!(
        stdout(&verified).contains("signed by key"),
        "{}",
        describe(&verified)
    );
}

fn pyspdxtools() -> PathBuf {
    let tool = repo_dir().join("target/spdx-venv/bin/pyspdxtools");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup",
        tool.display()
    );
    tool
}

fn validate_sbom(path: &Path) -> Output {
    Command::new(pyspdxtools())
        .arg("--infile")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn sbom_passes_pyspdxtools_and_lists_every_image() {
    let Some(applied) = applied("sbom_passes_pyspdxtools_and_lists_every_image") else {
        return;
    };
    let path = applied.out.join("sbom.spdx.json");
    let output = validate_sbom(&path);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "pyspdxtools reported problems:\n{}",
        describe(&output)
    );

    let sbom: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let checksums: BTreeSet<String> = packages
        .iter()
        .map(|p| {
            format!(
                "sha256:{}",
                p["checksums"][0]["checksumValue"].as_str().unwrap()
            )
        })
        .collect();
    let blueprint = blueprint_json(&applied.out);
    for stack in blueprint["stacks"].as_array().unwrap() {
        for image in stack["images"].as_array().unwrap() {
            assert!(
                checksums.contains(image["digest"].as_str().unwrap()),
                "image {} is not in the SBOM",
                image["reference"]
            );
        }
    }
    let k0s = packages.iter().find(|p| p["name"] == "k0s").unwrap();
    assert_eq!(
        k0s["externalRefs"][0]["referenceLocator"],
        "pkg:github/k0sproject/k0s@v1.35.3%2Bk0s.0"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            k0s["checksums"][0]["checksumValue"].as_str().unwrap()
        ),
        blueprint["nodes"][0]["files"]["/usr/local/bin/k0s"]
            .as_str()
            .unwrap()
    );

    // The validator rejects a package without its download location, so its silence above
    // means something.
    let mut broken = sbom.clone();
    broken["packages"][0]
        .as_object_mut()
        .unwrap()
        .remove("downloadLocation");
    let broken_path = applied.lab.dir.join("broken.spdx.json");
    fs::write(&broken_path, broken.to_string()).unwrap();
    let output = validate_sbom(&broken_path);
    assert!(
        !output.status.success() || !output.stdout.is_empty() || !output.stderr.is_empty(),
        "pyspdxtools accepted a package without downloadLocation"
    );
}

/// Runs headless Chromium as root in a network namespace of its own, so that the page cannot
/// reach anything, and records a NetLog of the requests it tried.
fn chromium(lab: &Lab, page: &Path, args: &[&str], net_log: &Path) -> Output {
    let profile = tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir_in(&lab.dir)
        .unwrap();
    Command::new("unshare")
        .args([
            "--net",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args(["--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium (scripts/setup installs it)")
}

/// Lists the URLs of requests the page itself started, from a Chromium NetLog. The browser's
/// own background requests carry the initiator "not an origin" and are left out.
fn page_requests(net_log: &Path) -> Vec<String> {
    let log: Value = serde_json::from_str(&fs::read_to_string(net_log).unwrap()).unwrap();
    let start_job = &log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == *start_job)
        .filter(|event| event["params"]["initiator"] != "not an origin")
        .filter_map(|event| event["params"]["url"].as_str().map(str::to_string))
        .collect()
}

/// Reads the width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

#[test]
fn report_renders_offline_in_chromium() {
    let Some(applied) = applied("report_renders_offline_in_chromium") else {
        return;
    };
    let lab = &applied.lab;
    let report = applied.out.join("report.html");
    let html = fs::read_to_string(&report).unwrap();
    for attribute in ["src=", "href="] {
        for (index, _) in html.match_indices(attribute) {
            let value: String = html[index + attribute.len()..].chars().take(12).collect();
            let value = value.trim_start_matches(['"', '\'']);
            assert!(
                !value.starts_with("http:")
                    && !value.starts_with("https:")
                    && !value.starts_with("//"),
                "{attribute}{value} loads an external resource"
            );
        }
    }
    assert!(!html.contains("<script"), "the report carries a script");

    // A page that loads an image shows up in the NetLog, so an empty list below means something.
    let external = lab.dir.join("external.html");
    fs::write(
        &external,
        "<p>x</p><img src=\"http://127.0.0.1:9/pixel.png\">",
    )
    .unwrap();
    let control_log = lab.dir.join("control.netlog.json");
    chromium(lab, &external, &["--dump-dom"], &control_log);
    assert_eq!(
        page_requests(&control_log),
        ["http://127.0.0.1:9/pixel.png"]
    );

    let net_log = lab.dir.join("report.netlog.json");
    let dom = chromium(lab, &report, &["--dump-dom"], &net_log);
    assert!(dom.status.success(), "{}", describe(&dom));
    assert_eq!(page_requests(&net_log), Vec::<String>::new());
    let dom = stdout(&dom);
    let blueprint = blueprint_json(&applied.out);
    let controls = blueprint["compliance"].as_array().unwrap();
    assert_eq!(dom.matches("<tr class=\"control\"").count(), controls.len());
    for control in controls {
        let id = control["id"].as_str().unwrap();
        let row_start = dom
            .find(&format!("id=\"control-{id}\""))
            .unwrap_or_else(|| panic!("no row {id}"));
        let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
        assert!(row.contains("result pass"), "{id}: {row}");
    }
    for pillar in [
        "Data governance and residency",
        "Hard multi-tenancy",
        "Secure infrastructure and supply chain",
        "Model and artifact transparency",
        "Continuous compliance and observability",
    ] {
        assert!(dom.contains(pillar), "no pillar {pillar}");
    }
    assert_eq!(
        dom.matches("<g class=\"node\">").count(),
        3,
        "topology nodes"
    );

    let screenshot = lab.dir.join("report.png");
    let shot = chromium(
        lab,
        &report,
        &[
            "--window-size=1280,2400",
            &format!("--screenshot={}", screenshot.display()),
        ],
        &lab.dir.join("shot.netlog.json"),
    );
    assert!(shot.status.success(), "{}", describe(&shot));
    let blank = lab.dir.join("blank.html");
    fs::write(&blank, "<!DOCTYPE html><title>blank</title>").unwrap();
    let blank_shot = lab.dir.join("blank.png");
    chromium(
        lab,
        &blank,
        &[
            "--window-size=1280,2400",
            &format!("--screenshot={}", blank_shot.display()),
        ],
        &lab.dir.join("blank.netlog.json"),
    );
    let png = fs::read(&screenshot).unwrap();
    assert_eq!(png_size(&png), (1280, 2400));
    let blank_png = fs::read(&blank_shot).unwrap();
    assert!(
        png.len() > 10 * blank_png.len(),
        "the report screenshot ({} bytes) is not much larger than a blank page's ({} bytes)",
        png.len(),
        blank_png.len()
    );
}
