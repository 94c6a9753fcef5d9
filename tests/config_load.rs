//! Loading cluster files in the shapes k0sctl users write, through the library API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock::config::{
    Cluster, ClusterLoader, ConfigError, DriverSource, FileSource, InstallOptions, Isolation,
    MigStrategy, PolicyMode, Role, TaintEffect, Toggle,
};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(path)
}

fn load_with(paths: &[&str], env: &[(&str, &str)]) -> Result<Cluster, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let paths: Vec<PathBuf> = paths.iter().map(|path| fixture(path)).collect();
    ClusterLoader::with_env(move |name| env.get(name).cloned()).load(&paths)
}

fn yaml(text: &str) -> yaml_serde::Value {
    yaml_serde::from_str(text).unwrap()
}

#[test]
fn multidoc_files_load_unchanged() {
    let cluster = load_with(
        &[
            "valid/multidoc/cluster.yaml",
            "valid/multidoc/k0s-and-pod.yaml",
        ],
        &[("K0S_VERSION", "v1.35.3+k0s.0"), ("OS_OVERRIDE", "ubuntu")],
    )
    .unwrap();

    assert_eq!(cluster.name, "k0s-cluster");
    assert_eq!(cluster.user, "admin");
    assert_eq!(
        cluster.k0s.version.as_ref().unwrap().to_string(),
        "v1.35.3+k0s.0"
    );
    assert_eq!(cluster.hosts.len(), 2);
    assert_eq!(cluster.hosts[0].os.as_deref(), Some("ubuntu"));
    assert_eq!(cluster.hosts[0].ssh.port, 9022);
    assert_eq!(cluster.hosts[0].ssh.user, "root");
    assert!(cluster.hosts[1].upload_binary);
}

#[test]
fn key_path_resolves_against_the_file() {
    let cluster = load_with(
        &[
            "valid/multidoc/cluster.yaml",
            "valid/multidoc/k0s-and-pod.yaml",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        cluster.hosts[0].ssh.key_path.as_deref(),
        Some(fixture("valid/multidoc/./id_ed25519").as_path())
    );
}

#[test]
fn cluster_config_document_merges_into_k0s_config() {
    let cluster = load_with(
        &[
            "valid/multidoc/cluster.yaml",
            "valid/multidoc/k0s-and-pod.yaml",
        ],
        &[],
    )
    .unwrap();
    let expected = yaml(
        "apiVersion: k0s.k0sproject.io/v1beta1\n\
         kind: clusterconfig\n\
         spec:\n  telemetry: {enabled: false}\n  network: {provider: calico}\n  extensions: {helm: {concurrencyLevel: 5}}\n",
    );
    assert_eq!(cluster.k0s.config, Some(expected));
}

#[test]
fn pod_document_is_kept_as_a_manifest() {
    let cluster = load_with(
        &[
            "valid/multidoc/cluster.yaml",
            "valid/multidoc/k0s-and-pod.yaml",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(cluster.manifests.len(), 1);
    let pod = &cluster.manifests[0];
    assert_eq!((pod.api_version.as_str(), pod.kind.as_str()), ("v1", "Pod"));
    assert_eq!(pod.name.as_deref(), Some("hello"));
    assert!(pod.origin.file.ends_with("k0s-and-pod.yaml"));
    assert_eq!(pod.origin.line, 10);
    assert!(
        pod.text.starts_with("apiVersion: v1\nkind: Pod\n"),
        "{:?}",
        pod.text
    );
    assert!(pod.text.contains("image: nginx:alpine"));
    assert!(!pod.text.contains("---"));
}

#[test]
fn unset_variable_becomes_empty() {
    let cluster = load_with(
        &[
            "valid/multidoc/cluster.yaml",
            "valid/multidoc/k0s-and-pod.yaml",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(cluster.k0s.version, None);
    assert_eq!(cluster.hosts[0].os, None);
}

#[test]
fn hooks_options_and_evict_taint() {
    let cluster = load_with(&["valid/hooks-evicttaint.yaml"], &[]).unwrap();
    assert_eq!(
        (cluster.name.as_str(), cluster.user.as_str()),
        ("lab", "operator")
    );

    let controller = &cluster.hosts[0];
    assert_eq!(
        controller.hooks.commands("apply", "before"),
        ["echo $HOSTNAME > apply.hook"]
    );
    assert_eq!(
        controller.hooks.commands("apply", "after"),
        ["grep -q hello apply.hook"]
    );
    assert_eq!(controller.hooks.commands("install", "after"), ["true"]);
    assert!(controller.hooks.commands("reset", "before").is_empty());

    let options = &cluster.options;
    assert!(!options.wait);
    assert_eq!(options.drain.grace_period, Duration::from_secs(120));
    assert_eq!(options.drain.timeout, Duration::from_secs(600));
    assert_eq!(
        options.drain.kubectl_args(),
        [
            "--force",
            "--grace-period=120",
            "--timeout=10m0s",
            "--pod-selector='app!=critical'",
            "--delete-emptydir-data",
            "--ignore-daemonsets"
        ]
    );
    assert!(options.evict_taint.enabled);
    assert_eq!(options.evict_taint.effect, TaintEffect::NoSchedule);
    assert_eq!(
        options.evict_taint.kubectl_taint(),
        "k0sctl.k0sproject.io/evict=true:NoSchedule"
    );
    assert!(options.evict_taint.controller_workers);
    assert_eq!(
        (
            options.concurrency.limit,
            options.concurrency.worker_disruption_percent,
            options.concurrency.uploads
        ),
        (5, 20, 2)
    );
    // --concurrency wins over the file's limit; without it the limit applies.
    assert_eq!(options.concurrency.hosts(Some(12), 40), 12);
    assert_eq!(options.concurrency.hosts(None, 40), 5);
}

#[test]
fn options_default_like_k0sctl() {
    let cluster = load_with(&["valid/single-host.yaml"], &[]).unwrap();
    let options = &cluster.options;
    assert!(options.wait);
    assert_eq!(
        options.drain.kubectl_args(),
        [
            "--force",
            "--grace-period=120",
            "--timeout=5m0s",
            "--delete-emptydir-data",
            "--ignore-daemonsets"
        ]
    );
    assert!(!options.evict_taint.enabled);
    assert_eq!(
        options.evict_taint.kubectl_taint(),
        "k0sctl.k0sproject.io/evict=true:NoExecute"
    );
    assert_eq!(
        (
            options.concurrency.limit,
            options.concurrency.worker_disruption_percent,
            options.concurrency.uploads
        ),
        (30, 10, 5)
    );
}

#[test]
fn host_fields_take_defaults_and_normalisation() {
    let cluster = load_with(&["valid/hooks-evicttaint.yaml"], &[]).unwrap();
    let controller = &cluster.hosts[0];
    assert_eq!(controller.role, Role::ControllerWorker);
    assert!(controller.no_taints);
    assert_eq!(controller.hostname.as_deref(), Some("lab-controller"));
    assert_eq!(
        controller.private_address,
        Some("10.0.0.5".parse().unwrap())
    );
    assert_eq!(controller.ssh.user, "admin");
    assert_eq!(controller.ssh.port, 22);
    let bastion = controller.ssh.bastion.as_ref().unwrap();
    assert_eq!(
        (
            bastion.address.to_string().as_str(),
            bastion.port,
            bastion.user.as_str()
        ),
        ("jump.lab.example", 2222, "root")
    );
    assert_eq!(
        controller.environment.get("RETRIES").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        controller.environment.get("HTTP_PROXY").map(String::as_str),
        Some("")
    );
    assert_eq!(controller.data_dir, "/var/lib/k0s");
    assert_eq!(
        controller.kubelet_root_dir.as_deref(),
        Some("/var/lib/kubelet")
    );
    assert_eq!(controller.k0s_install_path, "/usr/local/bin/k0s");

    let worker = &cluster.hosts[1];
    assert_eq!(worker.data_dir, "/srv/k0s");
    assert_eq!(
        worker.install_flags.iter().collect::<Vec<_>>(),
        ["--labels=pool=gpu"]
    );
}

#[test]
fn files_resolve_and_parse_modes() {
    let cluster = load_with(&["valid/hooks-evicttaint.yaml"], &[]).unwrap();
    let files = &cluster.hosts[0].files;
    assert_eq!(
        files[0].source,
        FileSource::Local(fixture("valid/files/motd"))
    );
    assert_eq!(files[0].perm, Some(0o644));
    assert_eq!(files[0].dir_perm, 0o755);
    assert_eq!(
        files[1].source,
        FileSource::Data("hello from airlock".into())
    );
    assert_eq!(files[1].perm, Some(0o600));
    assert_eq!(files[1].dir_perm, 0o750);
}

#[test]
fn install_commands_follow_roles() {
    let cluster = load_with(&["valid/hooks-evicttaint.yaml"], &[]).unwrap();
    let leader = cluster.leader().unwrap();
    assert_eq!(
        cluster
            .install_command(
                leader,
                InstallOptions {
                    leader: true,
                    force: false
                }
            )
            .unwrap(),
        "/usr/local/bin/k0s install controller --data-dir=/var/lib/k0s --kubelet-root-dir=/var/lib/kubelet \
         --enable-worker=true --no-taints=true --config=/etc/k0s/k0s.yaml \
         --kubelet-extra-args='--node-ip=10.0.0.5 --hostname-override=lab-controller'"
    );
    let worker = cluster.workers().next().unwrap();
    assert_eq!(
        cluster
            .install_command(worker, InstallOptions::default())
            .unwrap(),
        "/usr/local/bin/k0s install worker --labels=pool=gpu --data-dir=/srv/k0s --kubelet-root-dir=/var/lib/kubelet \
         --token-file=/etc/k0s/k0stoken"
    );
}

#[test]
fn host_selections() {
    let cluster = load_with(&["valid/hooks-evicttaint.yaml"], &[]).unwrap();
    let addresses = |hosts: Vec<&airlock::config::Host>| {
        hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(addresses(cluster.controllers().collect()), ["127.0.1.1"]);
    assert_eq!(addresses(cluster.workers().collect()), ["127.0.1.2"]);
    assert_eq!(
        addresses(cluster.workload_hosts().collect()),
        ["127.0.1.1", "127.0.1.2"]
    );
    assert_eq!(cluster.leader().unwrap().index, 0);
}

#[test]
fn merge_keys_and_open_ssh_blocks() {
    let cluster = load_with(&["valid/openssh-and-merge-keys.yaml"], &[]).unwrap();
    let merged = &cluster.hosts[1].ssh;
    assert_eq!(merged.address.to_string(), "127.0.1.2");
    assert_eq!((merged.user.as_str(), merged.port), ("admin", 2222));
    assert_eq!(
        merged.key_path.as_deref(),
        Some(fixture("valid/keys/lab").as_path())
    );

    let open_ssh = &cluster.hosts[2].ssh;
    assert_eq!(open_ssh.address.name(), Some("node-3"));
    assert_eq!((open_ssh.user.as_str(), open_ssh.port), ("ops", 22));
}

#[test]
fn single_host_runs_workloads() {
    let cluster = load_with(&["valid/single-host.yaml"], &[]).unwrap();
    let host = &cluster.hosts[0];
    assert_eq!(host.role, Role::Single);
    assert_eq!(cluster.workload_hosts().count(), 1);
    assert_eq!(cluster.workers().count(), 0);
    assert_eq!(
        cluster
            .install_command(
                host,
                InstallOptions {
                    leader: true,
                    force: false
                }
            )
            .unwrap(),
        "/usr/local/bin/k0s install controller --data-dir=/var/lib/k0s --kubelet-root-dir=/var/lib/kubelet \
         --single=true --config=/etc/k0s/k0s.yaml"
    );
}

#[test]
fn file_without_airlock_section_gets_safe_defaults() {
    let airlock = load_with(&["valid/single-host.yaml"], &[]).unwrap().airlock;
    assert!(airlock.bundle.trusted_keys.is_empty());
    assert!(!airlock.bundle.allow_unsigned);
    assert!(airlock.stacks.kubevirt.enabled);
    assert!(!airlock.stacks.kubevirt.use_emulation);
    assert_eq!(airlock.stacks.gpu_operator.enabled, Toggle::Auto);
    assert_eq!(airlock.stacks.gpu_operator.driver, DriverSource::Auto);
    assert!(!airlock.stacks.gpu_operator.mig.enabled);
    assert_eq!(airlock.stacks.observability.retention, "15d");
    assert_eq!(airlock.stacks.policy.mode, PolicyMode::Enforce);
    assert!(airlock.allowed_registries.is_empty());
    assert_eq!(
        airlock.data_classifications,
        ["public", "internal", "confidential", "restricted"]
    );
    assert!(airlock.tenants.is_empty());
    assert_eq!(airlock.residency, None);
}

#[test]
fn airlock_section_loads() {
    let airlock = load_with(&["valid/airlock-section.yaml"], &[])
        .unwrap()
        .airlock;
    let key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3";
    assert_eq!(airlock.bundle.trusted_keys.len(), 2);
    assert_eq!(
        airlock.bundle.trusted_keys[0].path.as_deref(),
        Some(fixture("valid/keys/site.pub").as_path())
    );
    assert_eq!(airlock.bundle.trusted_keys[0].key, key);
    assert_eq!(airlock.bundle.trusted_keys[1].path, None);
    assert_eq!(airlock.bundle.trusted_keys[1].key, key);

    let stacks = &airlock.stacks;
    assert!(stacks.kubevirt.use_emulation);
    assert_eq!(stacks.gpu_operator.enabled, Toggle::Off);
    assert_eq!(stacks.gpu_operator.driver, DriverSource::Host);
    assert_eq!(stacks.gpu_operator.driver_version, None);
    assert_eq!(stacks.gpu_operator.mig.strategy, MigStrategy::Mixed);
    assert_eq!(stacks.observability.retention, "30d");
    assert_eq!(stacks.policy.mode, PolicyMode::Audit);

    let residency = airlock.residency.as_ref().unwrap();
    assert_eq!(residency.jurisdiction.as_deref(), Some("DE"));
    assert_eq!(residency.site.as_deref(), Some("dc-a"));
    assert_eq!(
        airlock.allowed_registries,
        ["registry.local:5000", "quay.io/mirror"]
    );

    let research = &airlock.tenants[0];
    assert_eq!(
        (research.name.as_str(), research.classification.as_str()),
        ("research", "confidential")
    );
    assert_eq!(research.isolation, Isolation::Namespace);
    assert_eq!(research.quota.gpu, Some(4));
    assert_eq!(research.quota.cpu.as_ref().unwrap().as_str(), "64");
    assert_eq!(research.quota.memory.as_ref().unwrap().as_str(), "256Gi");
    let partner = &airlock.tenants[1];
    assert_eq!(partner.isolation, Isolation::Vm);
    assert_eq!(partner.quota.cpu.as_ref().unwrap().as_str(), "16");
    assert_eq!(partner.quota.memory, None);
}

#[test]
fn example_cluster_file_loads() {
    let source = airlock::config::SourceText {
        name: "cluster.yaml".into(),
        text: airlock::config::EXAMPLE_CLUSTER_FILE.into(),
        dir: PathBuf::from("."),
    };
    let cluster = ClusterLoader::with_env(|_| None)
        .load_texts(vec![source])
        .unwrap();
    assert_eq!(cluster.hosts.len(), 3);
    assert_eq!(cluster.controllers().count(), 1);
}

#[test]
fn problems_name_file_line_and_column() {
    let error = load_with(&["invalid/unknown-field.yaml"], &[]).unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 1);
    let location = problems[0].location.as_ref().unwrap();
    assert!(location.file.ends_with("invalid/unknown-field.yaml"));
    assert_eq!((location.line, location.column), (7, 9));
    assert_eq!(problems[0].message, "unknown field \"adress\"");
    assert_eq!(
        problems[0].fix.as_deref(),
        Some("did you mean \"address\"?")
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let error = load_with(&["invalid/does-not-exist.yaml"], &[]).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
}
