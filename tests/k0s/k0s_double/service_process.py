"""The k0s service process itself: what the unit's ExecStart runs (`k0s controller ...` or
`k0s worker ...`). It initializes or joins the cluster, registers the node, deploys the manifests
and charts, imports images and serves `k0s status` on the status socket until it is stopped.

Kept apart from the service commands in `service`, which run far more often and so import less.
"""

import contextlib
import http.server
import json
import os
import shlex
import signal
import socket
import socketserver
import threading

from . import config as k0s_config
from . import flags as f
from . import kube, oci, tokens
from .errors import K0sError, KubectlError
from .host import LOOP_INTERVAL, now, rfc3339
from .service import DEFAULT_CONFIG, DEFAULT_DATA_DIR, RUN_DIR, UNIT_DIR, UNITS, flags_for
from .store import Cluster, read_json, write_json

def k0s_vars(data_dir, kubelet_root_dir, config_path):
    return {
        "InvocationID": "",
        "AdminKubeConfigPath": data_dir + "/pki/admin.conf",
        "BinDir": data_dir + "/bin",
        "CertRootDir": data_dir + "/pki",
        "DataDir": data_dir,
        "KubeletRootDir": kubelet_root_dir,
        "EtcdCertDir": data_dir + "/pki/etcd",
        "EtcdDataDir": data_dir + "/etcd",
        "KineSocketPath": RUN_DIR + "/kine/kine.sock:2379",
        "KonnectivitySocketDir": RUN_DIR + "/konnectivity-server",
        "KubeletAuthConfigPath": data_dir + "/kubelet.conf",
        "ManifestsDir": data_dir + "/manifests",
        "RunDir": RUN_DIR,
        "KonnectivityKubeConfigPath": data_dir + "/pki/konnectivity.conf",
        "OCIBundleDir": data_dir + "/images",
        "DefaultStorageType": "etcd",
        "RuntimeConfigPath": RUN_DIR + "/k0s.yaml",
        "StatusSocketPath": RUN_DIR + "/status.sock",
        "StartupConfigPath": config_path,
        "HelmHome": data_dir + "/helmhome",
        "HelmRepositoryCache": data_dir + "/helmhome/cache",
        "HelmRepositoryConfig": data_dir + "/helmhome/repositories.yaml",
    }


class JoinFailed(Exception):
    """A join that k0s gives up on: the service exits with this message."""


class ServiceProcess:
    """The running k0s controller or worker of one host."""

    def __init__(self, host, role, argv):
        self.host = host
        self.role = role
        self.argv = argv
        self.parsed = f.parse(argv, flags_for(role))
        self.cluster = Cluster(host)
        self.data_dir = self.parsed.get("data-dir") or DEFAULT_DATA_DIR
        self.kubelet_root_dir = self.parsed.get("kubelet-root-dir") or self.data_dir + "/kubelet"
        self.single = bool(self.parsed.get("single"))
        self.workloads = role == "worker" or self.single or bool(self.parsed.get("enable-worker"))
        self.config_path = None
        self.config = None
        self.kubelet_args = shlex.split(self.parsed.get("kubelet-extra-args") or "")
        self.node_name = self._kubelet_arg("hostname-override") or host.name
        self.node_ip = self._kubelet_arg("node-ip") or host.address
        self.stopping = threading.Event()
        self.started = now()
        self.joined = False
        self.api_message = ""
        self.images = read_json(self.file(self.data_dir + "/double-images.json"), []) or []
        self.import_errors = {}
        self.imported_files = {}
        self.stack_hashes = {}
        self.stack_reports = {}
        self.chart_reports = {}
        self.server = None

    def file(self, logical):
        return self.host.path(logical)

    def log(self, level, message):
        print('time="%s" level=%s msg="%s"' % (rfc3339(), level, message.replace('"', '\\"')), flush=True)

    def _kubelet_arg(self, name):
        for index, arg in enumerate(self.kubelet_args):
            if arg.startswith("--%s=" % name):
                return arg.split("=", 1)[1].lower() if name == "hostname-override" else arg.split("=", 1)[1]
            if arg == "--" + name and index + 1 < len(self.kubelet_args):
                return self.kubelet_args[index + 1]
        return None

    # Startup.

    def load_config(self):
        path = self.parsed.get("config")
        if not path and os.path.exists(self.file(DEFAULT_CONFIG)):
            path = DEFAULT_CONFIG
        self.config_path = path or DEFAULT_CONFIG
        raw = {}
        if path:
            try:
                with open(self.file(path)) as file:
                    raw = k0s_config.parse_and_validate(file.read(), path)
            except OSError as error:
                raise JoinFailed("failed to load config %s: %s" % (path, error.strerror))
            except K0sError as error:
                raise JoinFailed("invalid node config: %s" % error)
        self.config = k0s_config.merged_with_defaults(raw, self.host.address)

    @property
    def api_address(self):
        api = self.config["spec"]["api"]
        return api.get("externalAddress") or api.get("address") or self.host.address

    def read_token(self):
        path = self.parsed.get("token-file")
        if not path:
            return None
        try:
            with open(self.file(path)) as file:
                return file.read()
        except OSError as error:
            raise JoinFailed("failed to read join token from %s: %s" % (path, error.strerror))

    def write_private(self, logical, text, mode=0o600):
        path = self.file(logical)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as file:
            file.write(text)
        os.chmod(path + ".tmp", mode)
        os.replace(path + ".tmp", path)

    def initialise_or_join_controller(self):
        ca_path = self.data_dir + "/pki/ca.crt"
        token_text = self.read_token()
        with self.cluster.locked():
            info = self.cluster.info()
            if os.path.exists(self.file(ca_path)):
                if info is None:
                    raise JoinFailed(
                        "%s contains the data of a cluster that no longer exists; reset this host" % self.file(self.data_dir)
                    )
                if self.host.name not in info["controllers"]:
                    info["controllers"].append(self.host.name)
                    self.cluster.save_info(info)
                return
            if token_text is not None and token_text.strip() and not token_text.lstrip().startswith("#"):
                self.join_controller(info, token_text)
                return
            if info is not None:
                raise JoinFailed(
                    "the cluster of this lab was already initialised by %s; a further controller needs --token-file "
                    "(real k0s would start a second, separate cluster here)" % info["initializedBy"]
                )
            self.initialise_cluster()

    def initialise_cluster(self):
        ca_id, ca_pem = tokens.new_ca()
        store = self.cluster.objects()
        store["items"] = {}
        kinds = kube.known_kinds(store)
        for name in kube.SYSTEM_NAMESPACES:
            kube.apply_object(store, kube.namespace_object(name), kinds)
        cluster_id = store["items"]["/Namespace//kube-system"]["metadata"]["uid"]
        info = {
            "caId": ca_id,
            "caPem": ca_pem,
            "clusterId": cluster_id,
            "initializedBy": self.host.name,
            "created": rfc3339(),
            "controllers": [self.host.name],
            "clusterConfig": self.config,
            "single": self.single,
        }
        self.cluster.save_objects(store)
        self.cluster.save_info(info)
        self.cluster.save_tokens({})
        self.cluster.save_etcd_members({})
        self.write_controller_pki(info)
        self.add_etcd_member()
        self.cluster.event("init", version=self.host.version)
        self.log("info", "initialised a new cluster %s" % cluster_id)

    def join_controller(self, info, token_text):
        decoded = tokens.decode(token_text) if token_text else None
        if info is None:
            raise JoinFailed("failed to join: the cluster the join token points to (%s) does not exist" % decoded.server)
        problem = tokens.check(self.cluster, decoded, "controller")
        if problem:
            raise JoinFailed("failed to join controller: %s" % problem)
        if info.get("single"):
            raise JoinFailed("failed to join controller: cannot join into a single node cluster")
        info["controllers"].append(self.host.name)
        self.cluster.save_info(info)
        self.write_controller_pki(info)
        self.add_etcd_member()
        self.cluster.event("join", role="controller", version=self.host.version, tokenId=decoded.token_id)
        self.log("info", "joined the cluster through %s" % decoded.server)

    def write_controller_pki(self, info):
        self.write_private(self.data_dir + "/pki/ca.crt", info["caPem"], 0o644)
        self.write_private(self.data_dir + "/pki/ca.key", tokens.pem("RSA PRIVATE KEY", {"key": tokens.random_text(32)}))
        certificate, key = tokens.client_certificate(info["caId"], "CN=kubernetes-admin,O=system:masters")
        admin = tokens.kubeconfig("https://localhost:6443", info["caPem"], "admin", certificate=certificate, key=key, cluster="local")
        self.write_private(self.data_dir + "/pki/admin.conf", admin)

    def add_etcd_member(self):
        storage = self.config["spec"].get("storage") or {}
        peer = (storage.get("etcd") or {}).get("peerAddress") or self.host.address
        members = self.cluster.etcd_members()
        members[self.host.name] = "https://%s:2380" % peer
        self.cluster.save_etcd_members(members)

    def join_worker(self):
        """Joins a worker; waits while the API in the token is down, fails on a bad token."""
        kubelet_conf = self.data_dir + "/kubelet.conf"
        if os.path.exists(self.file(kubelet_conf)):
            return
        token_text = self.read_token()
        if token_text is None or not token_text.strip():
            raise JoinFailed("normal kubelet kubeconfig does not exist and no join-token given. dunno how to make kubelet auth to api")
        decoded = tokens.decode(token_text)
        while not self.stopping.is_set():
            if self.cluster.api_record(decoded.address) or (
                self.cluster.any_api_record() and not any(r.get("address") == decoded.address for r in self.cluster.host_records().values())
            ):
                break
            self.api_message = "Get \"%s/version\": dial tcp %s:%d: connect: connection refused" % (decoded.server, decoded.address, decoded.port)
            self.log("warning", "waiting for the API at %s: %s" % (decoded.server, self.api_message))
            self.stopping.wait(LOOP_INTERVAL)
        if self.stopping.is_set():
            return
        with self.cluster.locked():
            problem = tokens.check(self.cluster, decoded, "worker")
            if problem:
                raise JoinFailed("failed to bootstrap kubelet client configuration: %s" % problem)
            info = self.cluster.info()
            certificate, key = tokens.client_certificate(info["caId"], "CN=system:node:%s,O=system:nodes" % self.node_name)
            conf = tokens.kubeconfig(decoded.server, info["caPem"], "system:node:" + self.node_name, certificate=certificate, key=key, cluster="default")
            self.write_private(kubelet_conf, conf)
            self.write_private(self.data_dir + "/pki/ca.crt", info["caPem"], 0o644)
        self.cluster.event("join", role="worker", version=self.host.version, tokenId=decoded.token_id, node=self.node_name)
        self.log("info", "joined the cluster through %s" % decoded.server)

    def register_node(self):
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        taints = []
        if self.role == "controller":
            labels["node-role.kubernetes.io/control-plane"] = "true"
            if not self.single and not self.parsed.get("no-taints"):
                taints.append(dict(kube.CONTROL_PLANE_TAINT))
        for entry in self.parsed.get("labels", []):
            key, _, value = entry.partition("=")
            labels[key] = value
        for entry in self.parsed.get("taints", []):
            key_value, _, effect = entry.rpartition(":")
            key, _, value = key_value.partition("=")
            taint = {"key": key, "effect": effect}
            if value:
                taint["value"] = value
            taints.append(taint)
        with self.cluster.locked():
            store = self.cluster.objects()
            key = "/Node//" + self.node_name
            node = store["items"].get(key)
            if node is None:
                node = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": self.node_name, "labels": labels, "annotations": {kube.HOST_ANNOTATION: self.host.name}},
                    "spec": {"taints": taints} if taints else {},
                }
                kube.apply_object(store, node, kube.known_kinds(store))
                self.cluster.event("node-registered", node=self.node_name, version=self.host.version)
            else:
                node["metadata"].setdefault("annotations", {})[kube.HOST_ANNOTATION] = self.host.name
            self.cluster.save_objects(store)
        self.joined = True

    def install_system_stack(self):
        """Applies k0s's own kube-system workloads with this version's images and the Chart
        objects of the Helm extensions in the configuration."""
        charts = ((self.config["spec"].get("extensions") or {}).get("helm") or {}).get("charts") or []
        with self.cluster.locked():
            store = self.cluster.objects()
            kinds = kube.known_kinds(store)
            for obj in kube.system_objects(self.host.version):
                kube.apply_object(store, obj, kinds)
            wanted = set()
            for chart in charts:
                name = "k0s-addon-chart-" + chart["name"]
                wanted.add(name)
                chart_object = {
                    "apiVersion": "helm.k0sproject.io/v1beta1",
                    "kind": "Chart",
                    "metadata": {
                        "name": name,
                        "namespace": "kube-system",
                        "labels": {"k0s.k0sproject.io/stack": "helm"},
                        "finalizers": ["helm.k0sproject.io/uninstall-helm-release"],
                    },
                    "spec": {
                        "chartName": chart["chartname"],
                        "releaseName": chart["name"],
                        "values": chart.get("values") or "",
                        "version": str(chart.get("version") or ""),
                        "namespace": chart["namespace"],
                        "timeout": str(chart.get("timeout") or "10m0s"),
                        "forceUpgrade": chart.get("forceUpgrade", True),
                        "order": chart.get("order", 0),
                    },
                }
                kube.apply_object(store, chart_object, kinds)
            for key, obj in list(store["items"].items()):
                if obj.get("kind") == "Chart" and (obj["metadata"].get("labels") or {}).get("k0s.k0sproject.io/stack") == "helm":
                    if obj["metadata"]["name"] not in wanted:
                        kube.delete_object(store, key)
            self.cluster.save_objects(store)

    # The loop.

    def heartbeat(self):
        record = {
            "name": self.host.name,
            "address": self.host.address,
            "nodeIP": self.node_ip,
            "controller": self.role == "controller",
            "role": self.role,
            "workloads": self.workloads,
            "single": self.single,
            "version": self.host.version,
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": now(),
            "stopped": False,
            "failed": False,
            "dataDir": self.data_dir,
            "node": self.node_name if self.workloads else None,
            "images": self.images,
            "importErrors": self.import_errors,
            "stacks": self.stack_reports,
            "charts": self.chart_reports,
            "apiAddress": self.api_address if self.role == "controller" else None,
        }
        self.cluster.save_host_record(self.host.name, record)

    def import_images(self):
        directory = self.file(self.data_dir + "/images")
        if not os.path.isdir(directory):
            return
        changed = False
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            key = (entry, stat.st_size, stat.st_mtime_ns)
            if self.imported_files.get(entry) == key:
                continue
            self.imported_files[entry] = key
            logical = self.data_dir + "/images/" + entry
            try:
                found = oci.read_archive(path)
            except oci.ArchiveError as error:
                message = str(error).replace(path, logical)
                self.import_errors[entry] = message
                self.log("error", "failed to import image bundle: %s" % message)
                continue
            self.import_errors.pop(entry, None)
            for name, digest in found:
                image = {"name": name, "digest": digest}
                if image not in self.images:
                    self.images.append(image)
                    changed = True
            self.cluster.event("images-imported", file=logical, images=[name for name, _ in found])
            self.log("info", "imported %d images from %s" % (len(found), logical))
        if changed:
            write_json(self.file(self.data_dir + "/double-images.json"), self.images)

    def reconcile(self):
        if self.role != "controller":
            return
        try:
            from . import deployers

            deployers.apply_stacks(self)
            deployers.reconcile_charts(self)
        except K0sError as error:
            self.log("error", str(error))

    def status_document(self):
        return {
            "Version": self.host.version,
            "Pid": os.getpid(),
            "PPid": os.getppid(),
            "Role": self.role,
            "SysInit": "linux-systemd",
            "StubFile": UNIT_DIR + "/" + UNITS[self.role] + ".service",
            "Output": "",
            "Workloads": self.workloads,
            "SingleNode": self.single,
            "Args": [self.host.logical(os.path.abspath(self.host.executable)), self.role] + self.argv,
            "WorkerToAPIConnectionStatus": {"Message": "" if self.joined else self.api_message, "Success": self.joined},
            "ClusterConfig": self.config if self.role == "controller" else None,
            "K0sVars": k0s_vars(self.data_dir, self.kubelet_root_dir, self.config_path or DEFAULT_CONFIG),
        }

    def serve_status(self):
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/status":
                    self.send_error(404)
                    return
                body = json.dumps(service.status_document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
            # As k0s's Go server listens: with the system's largest backlog. socketserver's
            # default of 5 refuses a burst of parallel `k0s status` or `token create` runs.
            request_queue_size = socket.SOMAXCONN

            def get_request(self):
                request, _ = super().get_request()
                return request, ("local", 0)

        path = self.file(RUN_DIR + "/status.sock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        self.server = Server(path, Handler)
        os.chmod(path, 0o600)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def shutdown(self, failed=None):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(RUN_DIR + "/status.sock"))
        record = self.cluster.host_record(self.host.name) or {"name": self.host.name, "address": self.host.address}
        record.update({"stopped": failed is None, "failed": failed is not None, "error": failed, "heartbeat": now(), "version": self.host.version})
        self.cluster.save_host_record(self.host.name, record)

    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        self.log("info", "k0s %s %s %s starting (pid %d)" % (self.role, self.host.version, " ".join(self.argv), os.getpid()))
        try:
            if self.role == "controller":
                self.load_config()
            else:
                self.config = k0s_config.merged_with_defaults({}, self.host.address)
            self.serve_status()
            if self.role == "controller":
                self.initialise_or_join_controller()
                self.install_system_stack()
            else:
                self.join_worker()
            if self.workloads and not self.stopping.is_set():
                self.register_node()
            self.joined = True
        except (JoinFailed, K0sError, KubectlError) as error:
            self.log("error", "Error: %s" % error)
            self.shutdown(failed=str(error))
            self.cluster.event("service-failed", role=self.role, version=self.host.version, error=str(error))
            return 1
        while not self.stopping.is_set():
            try:
                self.heartbeat()
                if self.workloads:
                    self.import_images()
                self.reconcile()
            except Exception as error:  # keep the service alive as k0s would; the log shows why
                self.log("error", "loop failed: %r" % error)
            self.stopping.wait(LOOP_INTERVAL)
        self.log("info", "shutting down")
        self.shutdown()
        return 0


def run_service(host, role, argv):
    host.require_root()
    return ServiceProcess(host, role, argv).run()
