//! Tests of the k0s test double: a table over its command line run directly on this machine,
//! and joining, readiness and failure scenarios, some of them on real lab hosts through ssh.

mod common;

use std::fs;
use std::time::Duration;

use common::double::{
    DirectCluster, DirectHost, V135, V136, airgap_bundle, wait_until, wrapper,
    write_airgap_bundles, write_chart, write_image_archive,
};
use common::{Lab, describe, stderr, stdout};

const VALID_CONFIG: &str = "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nmetadata:\n  name: k0s\nspec:\n  api:\n    address: 127.0.99.11\n";

/// One step of a command table: run `args` (with `stdin`) on a host and check the exit status
/// and what stdout and stderr contain.
struct Step {
    args: &'static str,
    stdin: Option<&'static str>,
    code: i32,
    stdout: &'static str,
    stderr: &'static str,
}

const fn step(args: &'static str, code: i32, stdout: &'static str, stderr: &'static str) -> Step {
    Step {
        args,
        stdin: None,
        code,
        stdout,
        stderr,
    }
}

const fn step_stdin(
    args: &'static str,
    stdin: &'static str,
    code: i32,
    stdout: &'static str,
    stderr: &'static str,
) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        code,
        stdout,
        stderr,
    }
}

fn run_table(host: &DirectHost, steps: &[Step]) {
    for step in steps {
        let args: Vec<&str> = step.args.split_whitespace().collect();
        let output = match step.stdin {
            Some(input) => host.k0s_stdin(&args, input),
            None => host.k0s(&args),
        };
        let context = format!("k0s {} on {}:\n{}", step.args, host.name, describe(&output));
        assert_eq!(
            output.status.code(),
            Some(step.code),
            "exit status of {context}"
        );
        assert!(
            stdout(&output).contains(step.stdout),
            "stdout lacks {:?} for {context}",
            step.stdout
        );
        assert!(
            stderr(&output).contains(step.stderr),
            "stderr lacks {:?} for {context}",
            step.stderr
        );
    }
}

const NAMESPACE_AND_CONFIGMAP: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\ndata:\n  a: b\n";
const CONFIGMAP_IN_MISSING_NAMESPACE: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nowhere\n";
const CUSTOM_RESOURCE_WITHOUT_CRD: &str =
    "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata:\n  name: kubevirt\n  namespace: demo\n";

#[test]
fn command_table_on_one_controller() {
    let cluster = DirectCluster::new(1, V135);
    let host = cluster.host(1);
    host.write("/etc/k0s/k0s.yaml", VALID_CONFIG);
    host.write("/tmp/invalid.yaml", "spec: [unclosed\n");
    host.write(
        "/tmp/unknown-top.yaml",
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspecs: {}\n",
    );
    host.write(
        "/tmp/unknown-spec.yaml",
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  apis: {}\n",
    );
    host.write("/tmp/chart-without-namespace.yaml", "spec:\n  extensions:\n    helm:\n      charts:\n        - name: x\n          chartname: /x.tgz\n");
    fs::create_dir_all(host.path("/backups")).unwrap();

    run_table(
        host,
        &[
            step("version", 0, "v1.35.3+k0s.0\n", ""),
            step("version -a", 0, "kubernetes : v1.35.3", ""),
            step("version --json", 0, "\"k0s\": \"v1.35.3+k0s.0\"", ""),
            step(
                "no-such-command",
                1,
                "",
                "Error: unknown command \"no-such-command\" for \"k0s\"",
            ),
            step(
                "version --no-such-flag",
                1,
                "",
                "Error: unknown flag: --no-such-flag",
            ),
            step("config create", 0, "kind: ClusterConfig", ""),
            step("config validate --config /etc/k0s/k0s.yaml", 0, "", ""),
            step("config validate", 1, "", "Error: --config can't be empty"),
            step(
                "config validate --config /tmp/invalid.yaml",
                1,
                "",
                "Error: failed to parse configuration",
            ),
            step(
                "config validate --config /tmp/unknown-top.yaml",
                1,
                "",
                "json: unknown field \"specs\"",
            ),
            step(
                "config validate --config /tmp/unknown-spec.yaml",
                1,
                "",
                "json: unknown field \"apis\"",
            ),
            step(
                "config validate --config /tmp/chart-without-namespace.yaml",
                1,
                "",
                "chart must have TargetNS field not empty",
            ),
            step_stdin("config validate --config -", VALID_CONFIG, 0, "", ""),
            step(
                "airgap list-images",
                0,
                "quay.io/k0sproject/kube-proxy:v1.35.3",
                "",
            ),
            step(
                "airgap list-images --all",
                0,
                "quay.io/k0sproject/calico-node:",
                "",
            ),
            step(
                "status",
                1,
                "",
                "Error: status: can't get \"status\" via \"/run/k0s/status.sock\": Get \"http://localhost/status\": dial unix /run/k0s/status.sock: connect: no such file or directory",
            ),
            step(
                "start",
                1,
                "",
                "Error: k0s has not been installed as a service",
            ),
            step(
                "stop",
                1,
                "",
                "Error: k0s has not been installed as a service",
            ),
            step(
                "install controller --config /etc/k0s/k0s.yaml --enable-worker --no-taints --labels=zone=a -e HTTP_PROXY=none",
                0,
                "",
                "",
            ),
            step(
                "install controller --config /etc/k0s/k0s.yaml",
                1,
                "",
                "Error: failed to install controller service: failed to install service: Init already exists: /etc/systemd/system/k0scontroller.service",
            ),
            step(
                "install controller --config /etc/k0s/k0s.yaml --enable-worker --no-taints --labels=zone=a -e HTTP_PROXY=none --force",
                0,
                "",
                "",
            ),
            step("stop", 1, "", "Error: already stopped"),
            step("start", 0, "", ""),
        ],
    );
    let unit = fs::read_to_string(host.path("/etc/systemd/system/k0scontroller.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k0s controller --config=/etc/k0s/k0s.yaml --enable-worker=true --labels=zone=a --no-taints=true\n"),
        "{unit}"
    );
    assert!(unit.contains("Environment=\"HTTP_PROXY=none\""), "{unit}");
    assert!(
        unit.contains("Description=k0s - Zero Friction Kubernetes"),
        "{unit}"
    );

    wait_until("the controller's API", Duration::from_secs(10), || {
        stdout(&host.k0s(&["kubectl", "get", "--raw=/readyz"])) == "ok"
    });
    let status: serde_json::Value =
        serde_json::from_str(&host.ok(&["status", "-o", "json"])).unwrap();
    for field in [
        "Version",
        "Pid",
        "PPid",
        "Role",
        "SysInit",
        "StubFile",
        "Workloads",
        "SingleNode",
        "Args",
        "WorkerToAPIConnectionStatus",
        "ClusterConfig",
        "K0sVars",
    ] {
        assert!(
            status.get(field).is_some(),
            "status -o json lacks {field}: {status}"
        );
    }
    assert_eq!(status["Role"], "controller");
    assert_eq!(status["Workloads"], true);
    assert_eq!(status["Args"][1], "controller");
    assert_eq!(status["Args"][2], "--config=/etc/k0s/k0s.yaml");
    assert_eq!(status["K0sVars"]["DataDir"], "/var/lib/k0s");

    run_table(
        host,
        &[
            step("start", 1, "", "Error: already running"),
            step("status", 0, "Role: controller", ""),
            step(
                "token create --role nobody",
                1,
                "",
                "Error: unsupported role \"nobody\"; supported roles are \"controller\" and \"worker\"",
            ),
            step("token create --role worker --expiry 10m", 0, "H4sI", ""),
            step("token list", 0, "worker", ""),
            step(
                "token invalidate zzzzzz",
                1,
                "",
                "Error: failed to invalidate token",
            ),
            step(
                "etcd member-list",
                0,
                "{\"members\": {\"lab-1\": \"https://127.0.99.11:2380\"}}",
                "",
            ),
            step(
                "kubeconfig admin",
                0,
                "server: https://127.0.99.11:6443",
                "",
            ),
            step("kubectl get --raw=/readyz", 0, "ok", ""),
            step(
                "kubectl get --raw=/readyz?verbose=true",
                0,
                "readyz check passed",
                "",
            ),
            step(
                "kubectl get --raw=/version",
                0,
                "\"gitVersion\": \"v1.35.3+k0s\"",
                "",
            ),
            step("kubectl get nodes", 0, "lab-1", ""),
            step(
                "kubectl get node lab-9 -o json",
                1,
                "",
                "Error from server (NotFound): nodes \"lab-9\" not found",
            ),
            step(
                "kubectl get deployment missing -n kube-system",
                1,
                "",
                "Error from server (NotFound): deployments.apps \"missing\" not found",
            ),
            step(
                "kubectl get frobnicators",
                1,
                "",
                "the server doesn't have a resource type \"frobnicators\"",
            ),
            step(
                "kubectl get -n kube-system namespace kube-system -o template={{.metadata.uid}}",
                0,
                "-",
                "",
            ),
            step_stdin(
                "kubectl apply -f -",
                NAMESPACE_AND_CONFIGMAP,
                0,
                "configmap/settings created",
                "",
            ),
            step_stdin(
                "kubectl apply -f -",
                NAMESPACE_AND_CONFIGMAP,
                0,
                "configmap/settings unchanged",
                "",
            ),
            step_stdin(
                "kubectl apply -f -",
                CONFIGMAP_IN_MISSING_NAMESPACE,
                1,
                "",
                "namespaces \"nowhere\" not found",
            ),
            step_stdin(
                "kubectl apply -f -",
                CUSTOM_RESOURCE_WITHOUT_CRD,
                1,
                "",
                "no matches for kind \"KubeVirt\" in version \"kubevirt.io/v1\"",
            ),
            step(
                "kubectl get configmap settings -n demo -o yaml",
                0,
                "a: b",
                "",
            ),
            step(
                "kubectl get configmaps -A -o name",
                0,
                "configmap/settings",
                "",
            ),
            step_stdin(
                "kubectl delete -f -",
                NAMESPACE_AND_CONFIGMAP,
                0,
                "configmap \"settings\" deleted",
                "",
            ),
            step("kubectl get configmap settings -n demo", 1, "", "not found"),
            step("kubectl cordon lab-1", 0, "node/lab-1 cordoned", ""),
            step("kubectl cordon lab-1", 0, "node/lab-1 already cordoned", ""),
            step("kubectl uncordon lab-1", 0, "node/lab-1 uncordoned", ""),
            step(
                "kubectl taint nodes lab-1 dedicated=gpu:NoSchedule",
                0,
                "node/lab-1 tainted",
                "",
            ),
            step(
                "kubectl taint nodes lab-1 dedicated=gpu:NoSchedule",
                1,
                "",
                "already has dedicated taint(s) with same effect(s) and --overwrite is false",
            ),
            step(
                "kubectl taint nodes lab-1 dedicated:NoSchedule-",
                0,
                "node/lab-1 untainted",
                "",
            ),
            step(
                "kubectl get node lab-1 -o jsonpath={.metadata.labels.zone}",
                0,
                "a",
                "",
            ),
            step(
                "backup --save-path /no-such-folder",
                1,
                "",
                "Error: the save-path directory (/no-such-folder) does not exist",
            ),
            step("backup --save-path /backups", 0, "", ""),
            step(
                "reset",
                1,
                "",
                "Error: another k0s process is still running, please stop k0s before reset",
            ),
            step("sysinfo", 0, "Total memory", ""),
            step("stop", 0, "", ""),
            step("stop", 1, "", "Error: already stopped"),
            step("status", 1, "", "Error: status: can't get \"status\""),
            step("reset", 0, "", "k0s cleanup operations done."),
            step(
                "start",
                1,
                "",
                "Error: k0s has not been installed as a service",
            ),
        ],
    );
    assert!(
        fs::read_dir(host.path("/backups"))
            .unwrap()
            .flatten()
            .any(|entry| entry
                .file_name()
                .to_string_lossy()
                .starts_with("k0s_backup_"))
    );
    assert!(
        !host.path("/var/lib/k0s").exists(),
        "reset left the data dir"
    );
    assert!(
        host.path("/usr/local/bin/k0s").exists(),
        "reset removed the binary"
    );
    assert!(
        !cluster.cluster_dir().join("cluster.json").exists(),
        "resetting the only controller left the cluster"
    );

    let events: Vec<String> = cluster
        .events()
        .iter()
        .map(|event| event["event"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "binary", "install", "start", "init", "cordon", "uncordon", "stop", "reset",
    ] {
        assert!(
            events.contains(&expected.to_owned()),
            "event log lacks {expected}: {events:?}"
        );
    }
    let position = |name: &str| events.iter().position(|event| event == name).unwrap();
    assert!(position("install") < position("start"));
    assert!(position("start") < position("stop"));
}

#[test]
fn generated_version_wrapper_reports_its_version() {
    let folder = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::double::double_home().join("new-version"))
        .args(["v1.37.0+k0s.0"])
        .arg(folder.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    // Outside tests/k0s/bin and off the lab hosts, K0S_DOUBLE_HOME locates the implementation.
    let generated = folder.path().join("k0s-v1.37.0+k0s.0");
    let run = |args: &[&str]| {
        std::process::Command::new(&generated)
            .args(args)
            .env("K0S_DOUBLE_HOME", common::double::double_home())
            .output()
            .unwrap()
    };
    let version = run(&["version"]);
    assert_eq!(
        stdout(&version),
        "v1.37.0+k0s.0\n",
        "{}",
        describe(&version)
    );
    let images = run(&["airgap", "list-images"]);
    assert!(
        stdout(&images).contains("kube-proxy:v1.37.0"),
        "{}",
        describe(&images)
    );

    let first = fs::read(wrapper(V135)).unwrap();
    let second = fs::read(wrapper(V136)).unwrap();
    assert_ne!(first, second, "two versions share one wrapper file");
}

#[test]
fn lab_artifacts_are_deterministic_and_complete() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    write_airgap_bundles(first.path());
    write_airgap_bundles(second.path());
    for version in [V135, V136] {
        let a = fs::read(airgap_bundle(first.path(), version)).unwrap();
        let b = fs::read(airgap_bundle(second.path(), version)).unwrap();
        assert!(a == b, "the {version} bundle differs between two runs");
    }
    // skopeo, a real OCI reader, finds each image that list-images prints.
    let host_images = std::process::Command::new(wrapper(V136))
        .args(["airgap", "list-images"])
        .output()
        .unwrap();
    for image in stdout(&host_images).lines() {
        let reference = format!(
            "oci-archive:{}:{image}",
            airgap_bundle(first.path(), V136).display()
        );
        let inspect = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", &reference])
            .output()
            .unwrap();
        assert!(
            inspect.status.success(),
            "skopeo cannot read {image}:\n{}",
            describe(&inspect)
        );
    }
}

/// Starts an initialised controller+worker on host 1 of `cluster` with its k0s bundle imported.
fn start_first_controller(cluster: &DirectCluster, bundles: &std::path::Path, extra: &[&str]) {
    let host = cluster.host(1);
    host.write("/etc/k0s/k0s.yaml", VALID_CONFIG);
    let mut args = vec!["install", "controller", "--config=/etc/k0s/k0s.yaml"];
    args.extend_from_slice(extra);
    host.ok(&args);
    host.ok(&["start"]);
    wait_until(
        "the first controller's API",
        Duration::from_secs(10),
        || stdout(&host.k0s(&["kubectl", "get", "--raw=/readyz"])) == "ok",
    );
    fs::create_dir_all(host.path("/var/lib/k0s/images")).unwrap();
    fs::copy(
        airgap_bundle(bundles, V135),
        host.path("/var/lib/k0s/images/k0s.tar"),
    )
    .unwrap();
}

fn node_ready(host: &DirectHost, node: &str) -> Option<String> {
    let output = host.k0s(&[
        "kubectl",
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    output.status.success().then(|| stdout(&output))
}

fn join_worker(cluster: &DirectCluster, index: usize, token: &str) {
    let host = cluster.host(index);
    host.write("/etc/k0s/k0stoken", token);
    host.ok(&["install", "worker", "--token-file=/etc/k0s/k0stoken"]);
    host.ok(&["start"]);
}

#[test]
fn bad_tokens_make_the_service_fail() {
    let bundles = tempfile::tempdir().unwrap();
    write_airgap_bundles(bundles.path());
    let cluster = DirectCluster::new(6, V135);
    start_first_controller(&cluster, bundles.path(), &["--enable-worker"]);
    let controller = cluster.host(1);

    let invalidated = controller.ok(&["token", "create", "--role=worker"]);
    let token_id = {
        use std::io::Read;
        let compressed = base64_decode(invalidated.trim());
        let mut text = String::new();
        flate_decode(&compressed).read_to_string(&mut text).unwrap();
        let token = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("token: "))
            .unwrap()
            .to_owned();
        token.split('.').next().unwrap().to_owned()
    };
    let invalidate = controller.ok(&["token", "invalidate", &token_id]);
    assert_eq!(
        invalidate,
        format!("token {token_id} deleted successfully\n")
    );
    let expired = controller.ok(&["token", "create", "--role=worker", "--expiry=1s"]);
    let controller_token = controller.ok(&["token", "create", "--role=controller"]);

    let cases = [
        (2, invalidated.as_str(), "invalid or was invalidated"),
        (3, expired.as_str(), "expired"),
        (
            4,
            controller_token.as_str(),
            "the join token is a controller token, but this node joins as worker",
        ),
        (
            5,
            "# overwritten by k0sctl after join\n",
            "failed to decode join token",
        ),
        (
            6,
            "",
            "normal kubelet kubeconfig does not exist and no join-token given",
        ),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    for (index, token, message) in cases {
        join_worker(&cluster, index, token);
        let host = cluster.host(index);
        wait_until(
            &format!("the service on {} to fail", host.name),
            Duration::from_secs(10),
            || host.service_log().contains(message),
        );
        wait_until("status to fail", Duration::from_secs(5), || {
            !host.k0s(&["status"]).status.success()
        });
        assert!(
            host.service_log().contains("level=error msg=\"Error: "),
            "{}",
            host.service_log()
        );
        assert!(
            node_ready(controller, &host.name).is_none(),
            "{} joined with a bad token",
            host.name
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let output = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{text}' | base64 -d")])
        .output()
        .unwrap();
    output.stdout
}

fn flate_decode(data: &[u8]) -> std::io::Cursor<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    std::io::Cursor::new(child.wait_with_output().unwrap().stdout)
}

const WEB_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\n  labels:\n    app: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: web\n          image: registry.airlock.test/web:1.0\n";
const WEB_BUDGET: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: default\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: web\n";

fn deployment_available(host: &DirectHost, namespace: &str, name: &str) -> (String, String) {
    let output = host.k0s(&[
        "kubectl",
        "get",
        "deployment",
        name,
        "-n",
        namespace,
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let deployment: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let available = deployment["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .unwrap()
        .clone();
    (
        available["status"].as_str().unwrap().to_owned(),
        available["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn workloads_need_imported_images_and_pdbs_block_drain() {
    let bundles = tempfile::tempdir().unwrap();
    write_airgap_bundles(bundles.path());
    let cluster = DirectCluster::new(2, V135);
    start_first_controller(&cluster, bundles.path(), &[]);
    let controller = cluster.host(1);
    let token = controller.ok(&["token", "create", "--role=worker", "--expiry=10m"]);
    join_worker(&cluster, 2, &token);
    let worker = cluster.host(2);
    wait_until("lab-2 to register", Duration::from_secs(10), || {
        node_ready(controller, "lab-2").is_some()
    });

    // The worker has no k0s image bundle yet: NotReady, and the condition names the bundle.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(node_ready(controller, "lab-2").unwrap(), "False");
    let node = controller.ok(&["kubectl", "get", "node", "lab-2", "-o", "json"]);
    assert!(
        node.contains("import the k0s airgap bundle of v1.35.3+k0s.0"),
        "{node}"
    );

    fs::create_dir_all(worker.path("/var/lib/k0s/images")).unwrap();
    fs::copy(
        airgap_bundle(bundles.path(), V135),
        worker.path("/var/lib/k0s/images/k0s.tar"),
    )
    .unwrap();
    wait_until("lab-2 to turn Ready", Duration::from_secs(10), || {
        node_ready(controller, "lab-2").as_deref() == Some("True")
    });

    let applied = controller.k0s_stdin(&["kubectl", "apply", "-f", "-"], WEB_DEPLOYMENT);
    assert!(applied.status.success(), "{}", describe(&applied));
    let (available, message) = deployment_available(controller, "default", "web");
    assert_eq!(available, "False");
    assert!(
        message.contains("registry.airlock.test/web:1.0"),
        "{message}"
    );
    assert!(message.contains("ErrImageNeverPull"), "{message}");

    write_image_archive(
        &worker.path("/var/lib/k0s/images/web.tar"),
        &["registry.airlock.test/web:1.0"],
    );
    wait_until("web to turn Available", Duration::from_secs(10), || {
        deployment_available(controller, "default", "web").0 == "True"
    });

    // A single replica under minAvailable: 1 cannot move: the drain is blocked until its timeout.
    let budget = controller.k0s_stdin(&["kubectl", "apply", "-f", "-"], WEB_BUDGET);
    assert!(budget.status.success(), "{}", describe(&budget));
    let drain = controller.k0s(&[
        "kubectl",
        "drain",
        "--force",
        "--grace-period=120",
        "--timeout=2s",
        "--delete-emptydir-data",
        "--ignore-daemonsets",
        "lab-2",
    ]);
    assert_eq!(drain.status.code(), Some(1), "{}", describe(&drain));
    assert!(
        stderr(&drain)
            .contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{}",
        describe(&drain)
    );
    assert!(
        stderr(&drain).contains("global timeout reached: 2s"),
        "{}",
        describe(&drain)
    );

    // Without the budget the drain goes through and leaves the node cordoned.
    controller.ok(&["kubectl", "delete", "pdb", "web"]);
    let drain = controller.ok(&[
        "kubectl",
        "drain",
        "--force",
        "--grace-period=120",
        "--timeout=5m0s",
        "--delete-emptydir-data",
        "--ignore-daemonsets",
        "lab-2",
    ]);
    assert!(drain.contains("node/lab-2 drained"), "{drain}");
    let without_daemonsets = controller.k0s(&["kubectl", "drain", "lab-2"]);
    assert!(
        stderr(&without_daemonsets).contains("cannot delete DaemonSet-managed Pods"),
        "{}",
        describe(&without_daemonsets)
    );

    let events: Vec<String> = cluster
        .events()
        .iter()
        .map(|event| event["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(events.contains(&"drain-failed".to_owned()), "{events:?}");
    assert!(events.contains(&"drain".to_owned()), "{events:?}");

    // The service process dies: the node stops heartbeating and turns NotReady (timeout 2 s here).
    let status: serde_json::Value =
        serde_json::from_str(&worker.ok(&["status", "-o", "json"])).unwrap();
    let pid = status["Pid"].as_i64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_until("lab-2 to turn NotReady", Duration::from_secs(10), || {
        node_ready(controller, "lab-2").as_deref() == Some("Unknown")
    });
    assert!(
        !worker.k0s(&["status"]).status.success(),
        "status answered for a killed service"
    );
}

const CHART_VALUES: &str =
    "image:\n  repository: registry.airlock.test/chart-app\n  tag: \"2.0\"\nreplicas: 1\n";
const CHART_TEMPLATE: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-app\n  labels:\n    chart: {{ .Chart.Name }}-{{ .Chart.Version }}\n    greeting: {{ .Values.greeting | quote }}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels:\n      app: {{ .Release.Name }}\n  template:\n    metadata:\n      labels:\n        app: {{ .Release.Name }}\n    spec:\n      containers:\n        - name: app\n          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n";

fn chart_status(host: &DirectHost) -> serde_json::Value {
    let output = host.k0s(&[
        "kubectl",
        "get",
        "chart",
        "k0s-addon-chart-demo",
        "-n",
        "kube-system",
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let chart: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    chart["status"].clone()
}

#[test]
fn charts_need_their_archive_on_every_controller() {
    let bundles = tempfile::tempdir().unwrap();
    write_airgap_bundles(bundles.path());
    let cluster = DirectCluster::new(2, V135);
    let chart = write_chart(
        cluster.dir.path(),
        "demo",
        "0.3.0",
        CHART_VALUES,
        &[("deployment.yaml", CHART_TEMPLATE)],
    );
    let config = format!(
        "{VALID_CONFIG}  extensions:\n    helm:\n      charts:\n        - name: demo\n          chartname: /var/lib/k0s/charts/demo-0.3.0.tgz\n          version: 0.3.0\n          namespace: demo\n          values: |\n            greeting: hello\n"
    );
    for index in [1, 2] {
        cluster.host(index).write("/etc/k0s/k0s.yaml", &config);
    }
    // The archive only on the first controller.
    fs::create_dir_all(cluster.host(1).path("/var/lib/k0s/charts")).unwrap();
    fs::copy(
        &chart,
        cluster.host(1).path("/var/lib/k0s/charts/demo-0.3.0.tgz"),
    )
    .unwrap();

    start_first_controller(
        &cluster,
        bundles.path(),
        &["--enable-worker", "--no-taints"],
    );
    let first = cluster.host(1);
    let token = first.ok(&["token", "create", "--role=controller", "--expiry=10m"]);
    let second = cluster.host(2);
    second.write("/etc/k0s/k0stoken", &token);
    second.ok(&[
        "install",
        "controller",
        "--config=/etc/k0s/k0s.yaml",
        "--token-file=/etc/k0s/k0stoken",
    ]);
    second.ok(&["start"]);
    wait_until(
        "the second controller to join",
        Duration::from_secs(10),
        || first.ok(&["etcd", "member-list"]).contains("lab-2"),
    );

    wait_until("the chart to fail", Duration::from_secs(10), || {
        chart_status(first)["error"]
            .as_str()
            .unwrap_or("")
            .contains("can't locate chart")
    });
    let status = chart_status(first);
    assert_eq!(
        status["error"],
        "can't locate chart: path not found: /var/lib/k0s/charts/demo-0.3.0.tgz"
    );
    assert_eq!(status["missingOn"], serde_json::json!(["lab-2"]));

    fs::create_dir_all(second.path("/var/lib/k0s/charts")).unwrap();
    fs::copy(&chart, second.path("/var/lib/k0s/charts/demo-0.3.0.tgz")).unwrap();
    wait_until("the chart to install", Duration::from_secs(10), || {
        chart_status(first)["error"] == ""
    });
    let status = chart_status(first);
    assert_eq!(status["releaseName"], "demo");
    assert_eq!(status["version"], "0.3.0");

    let deployment = first.ok(&[
        "kubectl",
        "get",
        "deployment",
        "demo-app",
        "-n",
        "demo",
        "-o",
        "json",
    ]);
    let deployment: serde_json::Value = serde_json::from_str(&deployment).unwrap();
    assert_eq!(deployment["metadata"]["labels"]["chart"], "demo-0.3.0");
    assert_eq!(deployment["metadata"]["labels"]["greeting"], "hello");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.airlock.test/chart-app:2.0"
    );
    let (available, message) = deployment_available(first, "demo", "demo-app");
    assert_eq!(available, "False");
    assert!(
        message.contains("registry.airlock.test/chart-app:2.0"),
        "{message}"
    );
}

#[test]
fn manifest_stacks_apply_and_prune() {
    let bundles = tempfile::tempdir().unwrap();
    write_airgap_bundles(bundles.path());
    let cluster = DirectCluster::new(1, V135);
    start_first_controller(&cluster, bundles.path(), &[]);
    let host = cluster.host(1);
    host.write(
        "/var/lib/k0s/manifests/demo/00-namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
    );
    host.write(
        "/var/lib/k0s/manifests/demo/10-config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\n",
    );
    host.write(
        "/var/lib/k0s/manifests/demo/20-ignored.yml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ignored\n  namespace: demo\n",
    );
    host.write(
        "/var/lib/k0s/manifests/demo/nested/30-ignored.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested\n  namespace: demo\n",
    );

    wait_until("the stack to apply", Duration::from_secs(10), || {
        host.k0s(&["kubectl", "get", "configmap", "settings", "-n", "demo"])
            .status
            .success()
    });
    assert!(
        !host
            .k0s(&["kubectl", "get", "configmap", "ignored", "-n", "demo"])
            .status
            .success(),
        ".yml files are applied"
    );
    assert!(
        !host
            .k0s(&["kubectl", "get", "configmap", "nested", "-n", "demo"])
            .status
            .success(),
        "nested folders are applied"
    );

    fs::remove_file(host.path("/var/lib/k0s/manifests/demo/10-config.yaml")).unwrap();
    wait_until("the stack to prune", Duration::from_secs(10), || {
        !host
            .k0s(&["kubectl", "get", "configmap", "settings", "-n", "demo"])
            .status
            .success()
    });
}

#[test]
fn lab_hosts_join_and_turn_ready_over_ssh() {
    let Some(lab) = Lab::start_with(
        "lab_hosts_join_and_turn_ready_over_ssh",
        3,
        &["--heartbeat-timeout", "2"],
    ) else {
        return;
    };
    let bundles = tempfile::tempdir().unwrap();
    write_airgap_bundles(bundles.path());
    let binary = fs::read(wrapper(V135)).unwrap();
    let bundle = fs::read(airgap_bundle(bundles.path(), V135)).unwrap();

    for host in ["lab-1", "lab-2", "lab-3"] {
        upload(&lab, host, "/usr/local/bin/k0s", &binary, "755");
        let version = lab.ssh_root(host, "k0s version");
        assert_eq!(
            stdout(&version),
            "v1.35.3+k0s.0\n",
            "{}",
            describe(&version)
        );
    }
    // ops on lab-2 without sudo is not root.
    let unprivileged = lab.ssh("lab-2", "k0s install worker");
    assert!(
        stderr(&unprivileged).contains("Error: this command must be run as root"),
        "{}",
        describe(&unprivileged)
    );

    let config = format!(
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\nspec:\n  api:\n    address: {}.11\n",
        lab.subnet
    );
    upload(&lab, "lab-1", "/etc/k0s/k0s.yaml", config.as_bytes(), "600");
    ssh_ok(
        &lab,
        "lab-1",
        "k0s config validate --config=/etc/k0s/k0s.yaml && k0s install controller --config=/etc/k0s/k0s.yaml && k0s start",
    );
    wait_until("lab-1's API", Duration::from_secs(15), || {
        stdout(&lab.ssh_root(
            "lab-1",
            "env KUBECONFIG=/var/lib/k0s/pki/admin.conf k0s kubectl get --raw=/readyz",
        )) == "ok"
    });

    let token = ssh_ok(
        &lab,
        "lab-1",
        "k0s token create --role worker --expiry 10m0s --data-dir=/var/lib/k0s",
    );
    let decoded = ssh_ok(
        &lab,
        "lab-1",
        &format!("echo {} | base64 -d | gunzip", token.trim()),
    );
    assert!(
        decoded.contains(&format!("server: https://{}.11:6443", lab.subnet)),
        "{decoded}"
    );
    for host in ["lab-2", "lab-3"] {
        upload(&lab, host, "/etc/k0s/k0stoken", token.as_bytes(), "600");
        ssh_ok(
            &lab,
            host,
            "k0s install worker --token-file=/etc/k0s/k0stoken && k0s start",
        );
    }
    let kubectl = |command: &str| {
        lab.ssh_root(
            "lab-1",
            &format!(
                "env KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl {command}"
            ),
        )
    };
    let ready = |node: &str| {
        stdout(&kubectl(&format!(
            "get node {node} -o jsonpath={{.status.conditions[0].status}}"
        )))
    };
    wait_until("both workers to register", Duration::from_secs(15), || {
        ready("lab-2") == "False" && ready("lab-3") == "False"
    });

    // Only lab-2 gets the bundle: lab-3 stays NotReady.
    upload(
        &lab,
        "lab-2",
        "/var/lib/k0s/images/k0s-airgap-bundle.tar",
        &bundle,
        "644",
    );
    wait_until("lab-2 to turn Ready", Duration::from_secs(15), || {
        ready("lab-2") == "True"
    });
    assert_eq!(ready("lab-3"), "False");

    // The worker reads its own node through kubelet.conf, as k0sctl does.
    let own = lab.ssh_root(
        "lab-2",
        "env KUBECONFIG=/var/lib/k0s/kubelet.conf k0s kubectl get node lab-2 -o json",
    );
    assert!(own.status.success(), "{}", describe(&own));

    // A frozen worker stops heartbeating and turns NotReady, and back after the thaw.
    lab.run(&["freeze", "lab-2"]);
    wait_until(
        "frozen lab-2 to turn NotReady",
        Duration::from_secs(15),
        || ready("lab-2") == "Unknown",
    );
    lab.run(&["thaw", "lab-2"]);
    wait_until(
        "thawed lab-2 to turn Ready",
        Duration::from_secs(15),
        || ready("lab-2") == "True",
    );

    let events = fs::read_to_string(lab.dir.join("cluster/events.jsonl")).unwrap();
    for host in ["lab-1", "lab-2", "lab-3"] {
        assert!(
            events
                .lines()
                .any(|line| line.contains(&format!("\"host\": \"{host}\""))
                    && line.contains("\"event\": \"install\"")),
            "no install event for {host}"
        );
    }
}

fn ssh_ok(lab: &Lab, host: &str, command: &str) -> String {
    let output = lab.ssh_root(host, command);
    assert!(
        output.status.success(),
        "{host}: {command}\n{}",
        describe(&output)
    );
    stdout(&output)
}

/// Writes `contents` to `path` on a lab host through ssh (and sudo where the login is not root).
fn upload(lab: &Lab, host: &str, path: &str, contents: &[u8], mode: &str) {
    use std::io::Write;
    let lab_host = lab.host(host);
    let command = format!(
        "mkdir -p $(dirname {path}) && cat > {path}.tmp && chmod {mode} {path}.tmp && mv {path}.tmp {path}"
    );
    let remote = if lab_host.sudo {
        format!("sudo -n sh -c '{command}'")
    } else {
        command
    };
    let mut child = lab
        .ssh_command(host, &lab_host.user, 5)
        .arg(remote)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(contents).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "upload of {path} to {host} failed:\n{}",
        describe(&output)
    );
}
