//! `bundle build` from the network: files by URL, Helm charts and registry images, served by
//! servers each test starts on 127.0.0.1 (see `servers`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::fixtures::*;
use super::servers::*;

/// A scratch directory with a file server that serves a k0s binary and a chart repository, and
/// an OCI layout of two images (one multi-arch) to push to registries.
struct Net {
    dir: TempDir,
    files: FileServer,
    k0s: Vec<u8>,
    chart: Vec<u8>,
    layout: PathBuf,
}

impl Net {
    fn new() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let files = FileServer::start();
        let k0s = noise(11, 600 << 10);
        files.put("/releases/k0s-v1.35.3+k0s.0-amd64", k0s.clone());
        let chart = noise(12, 40 << 10);
        files.put("/charts/example-1.0.0.tgz", chart.clone());
        files.put("/charts/index.yaml", chart_index(&sha256_hex(&chart)));
        let layout = dir.path().join("layout");
        write_oci_layout(
            &layout,
            &[
                FixtureImage {
                    ref_name: "1.0",
                    layers: vec![("base", noise(13, 300 << 10)), ("app", b"app 1.0".to_vec())],
                    multi_arch: false,
                },
                FixtureImage {
                    ref_name: "2.0",
                    layers: vec![("base", noise(13, 300 << 10)), ("app", b"app 2.0".to_vec())],
                    multi_arch: true,
                },
            ],
        );
        fs::create_dir_all(dir.path().join("docker")).unwrap();
        Net {
            dir,
            files,
            k0s,
            chart,
            layout,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts an anonymous plain-HTTP registry with `app:1.0` and the multi-arch `app:2.0`.
    fn registry(&self) -> Registry {
        let registry = Registry::start(&self.path("registry"), RegistryAuth::Anonymous, None);
        for tag in ["1.0", "2.0"] {
            registry.push(&self.layout, tag, "app", &PushOptions::default());
        }
        registry
    }

    /// Writes a specification with the k0s URL, the chart and, if given, both images from
    /// `registry` (host and port); `extra` is added to the top level.
    fn spec(&self, name: &str, registry: Option<&str>, extra: &str) -> PathBuf {
        let mut plain_http = vec![self.files.authority()];
        let mut images = String::new();
        if let Some(registry) = registry {
            plain_http.push(registry.to_string());
            images = format!(
                "    images:\n      \
                 - {{ ref: 'registry.example/app:1.0', source: {{ image: '{registry}/app:1.0' }} }}\n      \
                 - {{ ref: 'registry.example/app:2.0', source: {{ image: '{registry}/app:2.0' }} }}\n"
            );
        }
        let spec = format!(
            "name: net\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\n\
             plainHttp: [{}]\n{extra}\
             artifacts:\n  \
             - {{ name: k0s, kind: k0s-binary, source: {{ url: '{}' }} }}\n\
             stacks:\n  - name: example\n    version: 1.0.0\n    artifacts:\n      \
             - {{ name: example-chart, kind: chart, source: {{ chart: {{ repo: '{}', name: example, version: 1.0.0 }} }} }}\n\
             {images}",
            plain_http
                .iter()
                .map(|host| format!("'{host}'"))
                .collect::<Vec<_>>()
                .join(", "),
            self.files.url("/releases/k0s-v1.35.3+k0s.0-amd64"),
            self.files.url("/charts"),
        );
        let path = self.path(&format!("{name}.yaml"));
        fs::write(&path, spec).unwrap();
        path
    }

    /// Runs airlock with no proxy settings and an empty Docker configuration, plus `env`.
    fn airlock(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_airlock"));
        command
            .args(args)
            .env_remove("AIRLOCK_KEY_PASSWORD")
            .env("RUST_LOG", "airlock=info")
            .env("DOCKER_CONFIG", self.path("docker"));
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().expect("the airlock binary runs")
    }

    /// Builds `spec` into `output` with `args`; returns standard error, asserting `status`.
    fn build(
        &self,
        spec: &Path,
        output: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        status: i32,
    ) -> String {
        let mut all = vec![
            "bundle",
            "build",
            spec.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ];
        all.extend(args);
        let result = self.airlock(&all, env);
        let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
        assert_eq!(
            result.status.code(),
            Some(status),
            "airlock {}\n{stderr}",
            all.join(" ")
        );
        stderr
    }
}

fn chart_index(hex: &str) -> String {
    format!(
        "apiVersion: v1\nentries:\n  example:\n  - apiVersion: v2\n    name: example\n    version: 1.0.0\n    \
         digest: {hex}\n    urls:\n    - example-1.0.0.tgz\n  other:\n  - name: other\n    version: 0.1.0\n    urls: [other-0.1.0.tgz]\n"
    )
}

/// Asserts that every file of the bundle's blob directory is named after its content's digest.
fn assert_blobs_named_by_content(bundle: &Path) {
    for entry in fs::read_dir(bundle.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with('.') {
            continue;
        }
        assert_eq!(sha256_hex(&read(&path)), name, "{}", path.display());
    }
}

fn blob_exists(bundle: &Path, digest: &str) -> bool {
    bundle
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

#[test]
fn network_build_verifies_and_skopeo_reads_images() {
    let net = Net::new();
    let registry = net.registry();
    let spec = net.spec("net", Some(&registry.authority()), "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &["--jobs", "3"], &[], 0);
    assert!(
        stderr.contains("recorded the digests of unpinned downloads"),
        "{stderr}"
    );

    let verified = run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    assert!(
        verified.contains("bundle net version 1 verified"),
        "{verified}"
    );
    let manifest = fs::read_to_string(bundle.join("bundle.yaml")).unwrap();
    assert!(
        manifest.contains(&format!("sha256:{}", sha256_hex(&net.k0s))),
        "{manifest}"
    );
    assert!(
        manifest.contains(&format!("sha256:{}", sha256_hex(&net.chart))),
        "{manifest}"
    );
    assert!(
        manifest.contains("path: <data-dir>/airlock/charts/example-1.0.0.tgz"),
        "{manifest}"
    );

    for reference in ["registry.example/app:1.0", "registry.example/app:2.0"] {
        let target = format!("oci:{}:{reference}", bundle.display());
        let config = tool_ok("skopeo", &["inspect", "--config", &target], None);
        assert!(
            config.contains("\"architecture\": \"amd64\""),
            "{reference}: {config}"
        );
        let raw = tool_ok("skopeo", &["inspect", "--raw", &target], None);
        assert!(raw.contains("\"layers\""), "{reference}: {raw}");
    }
    // The base layer both images share is stored once: the only blobs over 300 KiB are it and
    // the k0s binary.
    let large_blobs = fs::read_dir(bundle.join("blobs/sha256"))
        .unwrap()
        .filter(|entry| fs::metadata(entry.as_ref().unwrap().path()).unwrap().len() > 300 << 10)
        .count();
    assert_eq!(large_blobs, 2);

    let lock = fs::read_to_string(net.path("net.lock")).unwrap();
    assert!(
        lock.contains(&net.files.url("/releases/k0s-v1.35.3+k0s.0-amd64")),
        "{lock}"
    );
    assert!(lock.contains("name: example"), "{lock}");
    assert!(
        lock.contains(&format!("reference: {}/app:2.0", registry.authority())),
        "{lock}"
    );
    assert!(lock.contains("platform: linux/amd64"), "{lock}");
    assert_blobs_named_by_content(&bundle);
}

#[test]
fn rebuild_with_lock_downloads_nothing() {
    let net = Net::new();
    let registry = net.registry();
    let spec = net.spec("net", Some(&registry.authority()), "");
    let bundle = net.path("bundle");
    net.build(&spec, &bundle, &[], &[], 0);
    let first_manifest = fs::read(bundle.join("bundle.yaml")).unwrap();
    let file_requests = net.files.requests().len();
    let registry_requests = registry.request_count();

    let stderr = net.build(&spec, &bundle, &["--frozen"], &[], 0);
    let from_output = format!(" from {}", bundle.display());
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with("reused ") && line.ends_with(&from_output)),
        "{stderr}"
    );
    assert!(!stderr.contains("downloaded"), "{stderr}");
    assert_eq!(
        net.files.requests().len(),
        file_requests,
        "{:?}",
        net.files.requests()
    );
    assert_eq!(registry.request_count(), registry_requests);
    assert_eq!(
        fs::read(bundle.join("bundle.yaml")).unwrap(),
        first_manifest
    );
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn pinned_url_mismatch_names_url_and_digests() {
    let net = Net::new();
    let spec = net.spec("net", None, "");
    let wrong = sha256_hex(b"another k0s");
    let text = fs::read_to_string(&spec).unwrap().replace(
        "kind: k0s-binary, source:",
        &format!("kind: k0s-binary, digest: 'sha256:{wrong}', source:"),
    );
    fs::write(&spec, text).unwrap();
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &[], &[], FAILURE);
    assert!(
        stderr.contains(&net.files.url("/releases/k0s-v1.35.3+k0s.0-amd64")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("sha256:{wrong}")), "{stderr}");
    assert!(
        stderr.contains(&format!("sha256:{}", sha256_hex(&net.k0s))),
        "{stderr}"
    );
    assert!(stderr.contains("the specification pins"), "{stderr}");
    assert!(!bundle.join("bundle.yaml").exists());
    assert!(!blob_exists(&bundle, &sha256_hex(&net.k0s)));
    assert!(!net.path("net.lock").exists());
}

#[test]
fn chart_archive_not_matching_index_fails() {
    let net = Net::new();
    net.files.put(
        "/charts/index.yaml",
        chart_index(&sha256_hex(b"the archive the index describes")),
    );
    let spec = net.spec("net", None, "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &[], &[], FAILURE);
    assert!(
        stderr.contains(&format!(
            "the chart archive {} has digest sha256:{}",
            net.files.url("/charts/example-1.0.0.tgz"),
            sha256_hex(&net.chart)
        )),
        "{stderr}"
    );
    assert!(stderr.contains("index.yaml lists sha256:"), "{stderr}");
    assert!(!blob_exists(&bundle, &sha256_hex(&net.chart)));
}

#[test]
fn missing_chart_version_lists_versions() {
    let net = Net::new();
    let spec = net.spec("net", None, "");
    let text = fs::read_to_string(&spec).unwrap().replace(
        "name: example, version: 1.0.0",
        "name: example, version: 9.9.9",
    );
    fs::write(&spec, text).unwrap();
    let stderr = net.build(&spec, &net.path("bundle"), &[], &[], USAGE);
    assert!(
        stderr.contains("has no chart example version 9.9.9"),
        "{stderr}"
    );
    assert!(stderr.contains("listed versions: 1.0.0"), "{stderr}");
}

#[test]
fn corrupted_registry_layer_fails() {
    let net = Net::new();
    let registry = net.registry();
    // skopeo compresses layers on push, so the registry's manifest names the layers.
    let raw = tool_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/app:1.0", registry.authority()),
        ],
        None,
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let data = registry.blob_data(&format!("sha256:{layer}"));
    flip_byte(&data, 40);

    let spec = net.spec("net", Some(&registry.authority()), "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &[], &[], FAILURE);
    assert!(
        stderr.contains(&format!(
            "image registry.example/app:1.0: blob sha256:{layer}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256:{}", sha256_hex(&read(&data)))),
        "{stderr}"
    );
    assert!(!blob_exists(&bundle, &layer));
    assert!(!bundle.join("bundle.yaml").exists());
    assert_blobs_named_by_content(&bundle);
}

#[test]
fn dropped_connection_resumes_with_range() {
    let net = Net::new();
    let path = "/releases/k0s-v1.35.3+k0s.0-amd64";
    net.files.drop_after(path, 200 << 10, 1);
    let spec = net.spec("net", None, "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &[], &[], 0);
    assert!(stderr.contains("retrying"), "{stderr}");

    let requests = net.files.requests_for(path);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].header("range"), None);
    assert_eq!(requests[1].header("range"), Some("bytes=204800-"));
    assert!(blob_exists(&bundle, &sha256_hex(&net.k0s)));
    assert_blobs_named_by_content(&bundle);
}

#[test]
fn interrupted_build_continues_on_next_run() {
    let net = Net::new();
    let path = "/releases/k0s-v1.35.3+k0s.0-amd64";
    // Every attempt of the first build stops after 100 KiB more.
    net.files.drop_after(path, 100 << 10, 100);
    let spec = net.spec("net", None, "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &[], &[], FAILURE);
    assert!(stderr.contains("failed 5 times"), "{stderr}");
    assert!(
        stderr.contains("a build run again continues its partial downloads"),
        "{stderr}"
    );
    let partials: Vec<u64> = fs::read_dir(bundle.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".partial-"))
        .map(|entry| entry.metadata().unwrap().len())
        .collect();
    assert_eq!(partials, [500 << 10], "five attempts of 100 KiB each");
    assert!(!blob_exists(&bundle, &sha256_hex(&net.k0s)));

    net.files.drop_after(path, 0, 0);
    let stderr = net.build(&spec, &bundle, &[], &[], 0);
    assert!(stderr.contains("continuing a partial download"), "{stderr}");
    let last = net.files.requests_for(path).pop().unwrap();
    assert_eq!(last.header("range"), Some("bytes=512000-"));
    assert!(stderr.contains("bytes=512000"), "{stderr}");
    assert!(
        stderr
            .contains("downloaded 1 blob (100.0 KiB, plus 500.0 KiB kept from partial downloads)"),
        "{stderr}"
    );
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn frozen_rejects_unpinned_source() {
    let net = Net::new();
    let spec = net.spec("net", None, "");
    let bundle = net.path("bundle");
    let stderr = net.build(&spec, &bundle, &["--frozen"], &[], USAGE);
    assert!(
        stderr.contains("--frozen builds only pinned sources"),
        "{stderr}"
    );
    assert!(stderr.contains("artifact k0s ("), "{stderr}");
    assert!(
        stderr.contains("artifact example-chart (chart example 1.0.0"),
        "{stderr}"
    );
    assert!(stderr.contains("build once without --frozen"), "{stderr}");
    assert!(net.files.requests().is_empty());
    assert!(!bundle.exists());
}

#[test]
fn lock_detects_changed_upstream_file_and_tag() {
    let net = Net::new();
    let registry = net.registry();
    let spec = net.spec("net", Some(&registry.authority()), "");
    net.build(&spec, &net.path("first"), &[], &[], 0);
    let lock = net.path("net.lock");

    // The file at the URL changes, and its size with it.
    let path = "/releases/k0s-v1.35.3+k0s.0-amd64";
    net.files.put(path, noise(99, 500 << 10));
    let stderr = net.build(&spec, &net.path("second"), &[], &[], FAILURE);
    assert!(
        stderr.contains(&format!("the lock file {} records", lock.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256:{}", sha256_hex(&net.k0s))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sha256:{}", sha256_hex(&noise(99, 500 << 10)))),
        "{stderr}"
    );
    assert!(
        stderr.contains("delete its entry from the lock file"),
        "{stderr}"
    );

    // The tag moves to another image.
    net.files.put(path, net.k0s.clone());
    let other = net.path("other-layout");
    write_oci_layout(
        &other,
        &[FixtureImage {
            ref_name: "1.0",
            layers: vec![("app", b"a rebuilt app 1.0".to_vec())],
            multi_arch: false,
        }],
    );
    registry.push(&other, "1.0", "app", &PushOptions::default());
    let stderr = net.build(&spec, &net.path("third"), &[], &[], FAILURE);
    assert!(
        stderr.contains(&format!(
            "image registry.example/app:1.0: {}/app:1.0 resolves to manifest",
            registry.authority()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("records"), "{stderr}");
}

#[test]
fn registry_with_htpasswd_takes_docker_config_credentials() {
    let net = Net::new();
    let tls = Tls::generate(&net.path("tls"));
    let registry = Registry::start(
        &net.path("registry"),
        RegistryAuth::Htpasswd {
            user: "robot",
            password: "s3cret",
        },
        Some(&tls),
    );
    registry.push(
        &net.layout,
        "2.0",
        "team/app",
        &PushOptions {
            tls: Some(&tls),
            credentials: Some(("robot", "s3cret")),
        },
    );
    let spec = net.path("tls.yaml");
    fs::write(
        &spec,
        format!(
            "name: tls\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\nstacks:\n  - name: example\n    version: 1.0.0\n    images:\n      \
             - {{ ref: 'registry.example/app:2.0', source: {{ image: '{}/team/app:2.0' }} }}\n",
            registry.authority()
        ),
    )
    .unwrap();
    let ca = tls.ca.to_str().unwrap();

    // Without the CA, the registry's certificate is not trusted.
    let stderr = net.build(&spec, &net.path("no-ca"), &[], &[], FAILURE);
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");

    // Without credentials, the registry refuses.
    let stderr = net.build(
        &spec,
        &net.path("anonymous"),
        &["--ca-cert", ca],
        &[],
        FAILURE,
    );
    assert!(
        stderr.contains(&format!(
            "registry {} refused access to {}/team/app:2.0 without credentials",
            registry.authority(),
            registry.authority()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("docker login"), "{stderr}");

    // Wrong credentials from a config.json.
    let config = net.path("auth/config.json");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let auth = |user: &str, password: &str| {
        format!(
            "{{\"auths\": {{\"https://{}\": {{\"auth\": \"{}\"}}}}}}",
            registry.authority(),
            data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
        )
    };
    fs::write(&config, auth("robot", "wrong")).unwrap();
    let config_arg = config.to_str().unwrap();
    let stderr = net.build(
        &spec,
        &net.path("wrong"),
        &["--ca-cert", ca, "--registry-auth", config_arg],
        &[],
        FAILURE,
    );
    assert!(
        stderr.contains(&format!("with the credentials from {config_arg}")),
        "{stderr}"
    );

    // The right ones, through --registry-auth and through DOCKER_CONFIG.
    fs::write(&config, auth("robot", "s3cret")).unwrap();
    let bundle = net.path("bundle");
    net.build(
        &spec,
        &bundle,
        &["--ca-cert", ca, "--registry-auth", config_arg],
        &[],
        0,
    );
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
    let docker_config = config.parent().unwrap().to_str().unwrap();
    net.build(
        &spec,
        &net.path("bundle-env"),
        &["--ca-cert", ca],
        &[("DOCKER_CONFIG", docker_config)],
        0,
    );
}

#[test]
fn token_registry_serves_anonymous_and_credential_helper_pulls() {
    let net = Net::new();
    let tokens = TokenServer::start(&net.path("token"), "robot", "t0ken-pass");
    let registry = Registry::start(&net.path("registry"), RegistryAuth::Token(&tokens), None);
    let push = PushOptions {
        tls: None,
        credentials: Some(("robot", "t0ken-pass")),
    };
    registry.push(&net.layout, "2.0", "public/app", &push);
    registry.push(&net.layout, "1.0", "private/app", &push);

    let spec = net.path("token.yaml");
    let write_spec = |repository: &str, tag: &str| {
        fs::write(
            &spec,
            format!(
                "name: token\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\nplainHttp: ['{}']\nstacks:\n  - name: example\n    version: 1.0.0\n    images:\n      \
                 - {{ ref: 'registry.example/app:{tag}', source: {{ image: '{}/{repository}:{tag}' }} }}\n",
                registry.authority(),
                registry.authority()
            ),
        )
        .unwrap();
    };

    // Anonymous token for a public repository.
    write_spec("public/app", "2.0");
    net.build(&spec, &net.path("public"), &[], &[], 0);
    let anonymous = tokens.requests().into_iter().any(|request| {
        request
            .path
            .contains("scope=repository%3Apublic%2Fapp%3Apull")
            || request.path.contains("scope=repository:public/app:pull")
    });
    assert!(anonymous, "{:?}", tokens.requests());

    // A private repository refuses an anonymous token...
    write_spec("private/app", "1.0");
    let stderr = net.build(&spec, &net.path("refused"), &[], &[], FAILURE);
    assert!(stderr.contains("refused access"), "{stderr}");

    // ...and accepts the credentials a credential helper gives.
    let helpers = net.path("helpers");
    fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-airlocktest");
    fs::write(
        &helper,
        "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"robot\",\"Secret\":\"t0ken-pass\"}' \"$server\"\n",
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let config = net.path("helper-config.json");
    fs::write(
        &config,
        format!(
            "{{\"credHelpers\": {{\"{}\": \"airlocktest\"}}}}",
            registry.authority()
        ),
    )
    .unwrap();
    let path = format!("{}:{}", helpers.display(), std::env::var("PATH").unwrap());
    let bundle = net.path("private");
    net.build(
        &spec,
        &bundle,
        &["--registry-auth", config.to_str().unwrap()],
        &[("PATH", &path)],
        0,
    );
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn https_proxy_tunnels_and_no_proxy_bypasses() {
    let net = Net::new();
    let tls = Tls::generate(&net.path("tls"));
    let registry = Registry::start(&net.path("registry"), RegistryAuth::Anonymous, Some(&tls));
    registry.push(
        &net.layout,
        "2.0",
        "app",
        &PushOptions {
            tls: Some(&tls),
            credentials: None,
        },
    );
    registry.push(
        &net.layout,
        "1.0",
        "app",
        &PushOptions {
            tls: Some(&tls),
            credentials: None,
        },
    );
    let proxy = ConnectProxy::start();
    let spec = net.path("proxy.yaml");
    fs::write(
        &spec,
        format!(
            "name: proxy\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\nstacks:\n  - name: example\n    version: 1.0.0\n    images:\n      \
             - {{ ref: 'registry.example/app:2.0', source: {{ image: '127.0.0.1:{port}/app:2.0' }} }}\n      \
             - {{ ref: 'registry.example/app:1.0', source: {{ image: 'localhost:{port}/app:1.0' }} }}\n",
            port = registry.port
        ),
    )
    .unwrap();
    let bundle = net.path("bundle");
    net.build(
        &spec,
        &bundle,
        &["--ca-cert", tls.ca.to_str().unwrap()],
        &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "localhost")],
        0,
    );
    let targets = proxy.targets();
    assert!(
        targets.contains(&format!("127.0.0.1:{}", registry.port)),
        "{targets:?}"
    );
    assert!(
        !targets.iter().any(|target| target.starts_with("localhost")),
        "{targets:?}"
    );
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn plain_http_url_needs_plain_http_entry() {
    let net = Net::new();
    let spec = net.spec("net", None, "");
    let text = fs::read_to_string(&spec)
        .unwrap()
        .replace(&format!("plainHttp: ['{}']\n", net.files.authority()), "");
    fs::write(&spec, text).unwrap();
    let stderr = net.build(&spec, &net.path("bundle"), &[], &[], USAGE);
    assert!(stderr.contains("uses plain HTTP"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "list \"{}\" under plainHttp",
            net.files.authority()
        )),
        "{stderr}"
    );
}

#[test]
fn oci_chart_comes_from_registry() {
    let net = Net::new();
    let registry = Registry::start(&net.path("registry"), RegistryAuth::Anonymous, None);
    let reference: oci_client::Reference = format!("{}/charts/example:1.0.0", registry.authority())
        .parse()
        .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        });
        let layer = oci_client::client::ImageLayer::new(
            net.chart.clone(),
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip".to_string(),
            None,
        );
        let config = oci_client::client::Config::new(
            b"{\"name\":\"example\",\"version\":\"1.0.0\"}".to_vec(),
            "application/vnd.cncf.helm.config.v1+json".to_string(),
            None,
        );
        client
            .push(
                &reference,
                &[layer],
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .unwrap();
    });

    let spec = net.path("chart.yaml");
    fs::write(
        &spec,
        format!(
            "name: chart\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\nplainHttp: ['{authority}']\nstacks:\n  - name: example\n    version: 1.0.0\n    artifacts:\n      \
             - {{ name: example-chart, kind: chart, source: {{ chart: {{ repo: 'oci://{authority}/charts', name: example, version: 1.0.0 }} }} }}\n",
            authority = registry.authority()
        ),
    )
    .unwrap();
    let bundle = net.path("bundle");
    net.build(&spec, &bundle, &[], &[], 0);
    let chart_digest = format!("sha256:{}", sha256_hex(&net.chart));
    let manifest = fs::read_to_string(bundle.join("bundle.yaml")).unwrap();
    assert!(manifest.contains(&chart_digest), "{manifest}");
    assert!(
        manifest.contains("path: <data-dir>/airlock/charts/example-1.0.0.tgz"),
        "{manifest}"
    );
    let lock = fs::read_to_string(net.path("chart.lock")).unwrap();
    assert!(
        lock.contains(&format!("repo: oci://{}/charts", registry.authority())),
        "{lock}"
    );
    assert!(lock.contains(&chart_digest), "{lock}");
    run_ok(&[
        "bundle",
        "verify",
        bundle.to_str().unwrap(),
        "--allow-unsigned",
    ]);
}

#[test]
fn image_platform_follows_index_and_config() {
    let net = Net::new();
    let registry = net.registry();
    let spec = net.path("arm.yaml");
    let write_spec = |tag: &str| {
        fs::write(
            &spec,
            format!(
                "name: arm\nversion: 1\nk0s: {{ version: v1.35.3+k0s.0 }}\nplatform: linux/arm64\nplainHttp: ['{authority}']\nstacks:\n  - name: example\n    version: 1.0.0\n    images:\n      \
                 - {{ ref: 'registry.example/app:{tag}', source: {{ image: '{authority}/app:{tag}' }} }}\n",
                authority = registry.authority()
            ),
        )
        .unwrap();
    };

    // The multi-arch image resolves to its arm64 manifest.
    write_spec("2.0");
    let bundle = net.path("bundle");
    net.build(&spec, &bundle, &[], &[], 0);
    let target = format!("oci:{}:registry.example/app:2.0", bundle.display());
    let config = tool_ok("skopeo", &["inspect", "--config", &target], None);
    assert!(config.contains("\"architecture\": \"arm64\""), "{config}");
    let lock = fs::read_to_string(net.path("arm.lock")).unwrap();
    assert!(lock.contains("platform: linux/arm64"), "{lock}");

    // The single-platform image is for amd64, which its config says.
    write_spec("1.0");
    let stderr = net.build(&spec, &net.path("single"), &[], &[], USAGE);
    assert!(
        stderr.contains("is an image for linux/amd64, but the bundle needs linux/arm64"),
        "{stderr}"
    );
}
