"""The k0s command line: dispatch to each subcommand and k0s's error reporting
(`Error: <message>` on stderr, exit status 1).

Installers run k0s many times per host, so each command imports only the modules it needs: YAML,
kubectl and the service process load when a command uses them."""

import importlib
import json
import os
import shutil
import sys
import time

from . import flags as f
from . import service, versions
from .errors import K0sError, KubectlError
from .host import Host, rfc3339
from .store import Cluster

USAGE = """k0s - The zero friction Kubernetes - https://k0sproject.io
This is the k0s test double: it follows the k0s command line for airlock's tests.

Usage:
  k0s [command]

Available Commands:
  airgap      Manage airgap setup
  backup      Back-Up k0s configuration. Must be run as root (or with sudo)
  config      Configuration related sub-commands
  controller  Run controller
  etcd        Manage etcd cluster
  install     Install k0s on a brand-new system. Must be run as root (or with sudo)
  kubeconfig  Create a kubeconfig file for a specified user
  kubectl     kubectl controls the Kubernetes cluster manager
  reset       Uninstall k0s. Must be run as root (or with sudo)
  restore     restore k0s state from given backup archive. Must be run as root (or with sudo)
  start       Start the k0s service configured on this host. Must be run as root (or with sudo)
  status      Get k0s instance status information
  stop        Stop the k0s service configured on this host. Must be run as root (or with sudo)
  sysinfo     Display system information
  token       Manage join tokens
  version     Print the k0s version
  worker      Run worker
"""


def cmd_version(host, argv):
    parsed = f.parse(argv, [f.Flag("all", "bool", "a"), f.Flag("json", "bool", "j")] + f.DEBUG_FLAGS)
    table = versions.version_table(host.version)
    if parsed.get("json"):
        print(json.dumps(dict(table), indent=2))
    elif parsed.get("all"):
        for name, value in table:
            print("%s : %s" % (name, value))
    else:
        print(host.version)
    return 0


def _data_dir(parsed):
    return (parsed.get("data-dir") or service.DEFAULT_DATA_DIR).rstrip("/")


def _running_status(host, parsed, wait=False):
    attempts = 120 if wait else 1
    for attempt in range(attempts):
        try:
            return service.query_status(host, service.socket_path(host, parsed))
        except K0sError:
            if attempt + 1 == attempts:
                raise
            time.sleep(1)


def cmd_token(host, argv):
    if not argv:
        print("Manage join tokens\n\nUsage:\n  k0s token [command]\n\nAvailable Commands:\n  create\n  invalidate\n  list")
        return 0
    from . import tokens

    command, rest = argv[0], argv[1:]
    common = [f.Flag("data-dir"), f.Flag("config", short="c"), f.Flag("status-socket")] + f.DEBUG_FLAGS
    cluster = Cluster(host)
    if command == "create":
        parsed = f.parse(rest, common + [f.Flag("role"), f.Flag("expiry"), f.Flag("wait", "bool")])
        role = parsed.get("role", "worker")
        if role not in ("worker", "controller"):
            raise K0sError('unsupported role "%s"; supported roles are "controller" and "worker"' % role)
        expiry = tokens.parse_duration(parsed.get("expiry", "0s"))
        host.require_root()
        status = _running_status(host, parsed, wait=bool(parsed.get("wait")))
        if status.get("SingleNode"):
            raise K0sError("refusing to create token: cannot join into a single node cluster")
        ca_path = _data_dir(parsed) + "/pki/ca.crt"
        try:
            with open(host.path(ca_path)) as file:
                ca_pem = file.read()
        except OSError as error:
            raise K0sError(
                'failed to read cluster CA from "%s": open %s: %s; check if the control plane is initialized on this node'
                % (ca_path, ca_path, (error.strerror or "").lower())
            )
        api = ((status.get("ClusterConfig") or {}).get("spec") or {}).get("api") or {}
        address = api.get("externalAddress") or api.get("address") or host.address
        port = api.get("k0sApiPort", 9443) if role == "controller" else api.get("port", 6443)
        with cluster.locked():
            token_id, token = tokens.create(cluster, role, expiry, address, port, ca_pem)
        # The event keeps the whole token so that tests can check that an installer never
        # prints or logs it.
        cluster.event("token-create", role=role, tokenId=token_id, expirySeconds=expiry, token=token)
        print(token)
        return 0
    if command == "list":
        parsed = f.parse(rest, common + [f.Flag("role")])
        host.require_root()
        _running_status(host, parsed)
        rows = [("ID", "ROLE", "EXPIRES AT")]
        for token_id, entry in sorted(cluster.tokens().items()):
            if parsed.get("role") and entry["role"] != parsed.get("role"):
                continue
            expires = rfc3339(entry["expires"]) if entry.get("expires") else "never"
            rows.append((token_id, entry["role"], expires))
        if len(rows) == 1:
            print("No k0s join tokens found")
            return 0
        for row in rows:
            print("%-8s %-12s %s" % row)
        return 0
    if command == "invalidate":
        parsed = f.parse(rest, common)
        if not parsed.args:
            raise K0sError("invalidate requires at least one token ID to invalidate")
        host.require_root()
        _running_status(host, parsed)
        with cluster.locked():
            table = cluster.tokens()
            for token_id in parsed.args:
                if token_id not in table:
                    raise K0sError('failed to invalidate token: secrets "bootstrap-token-%s" not found' % token_id)
                table.pop(token_id)
                print("token %s deleted successfully" % token_id)
            cluster.save_tokens(table)
        cluster.event("token-invalidate", tokenIds=parsed.args)
        return 0
    raise K0sError('unknown command "%s" for "k0s token"' % command)


def cmd_config(host, argv):
    if not argv:
        print("Configuration related sub-commands\n\nUsage:\n  k0s config [command]\n\nAvailable Commands:\n  create\n  validate")
        return 0
    from . import config as k0s_config

    command, rest = argv[0], argv[1:]
    common = [f.Flag("data-dir"), f.Flag("feature-gates", "list")] + f.DEBUG_FLAGS
    if command == "create":
        parsed = f.parse(rest, common + [f.Flag("include-images", "bool")])
        config = k0s_config.default_config(host.address, bool(parsed.get("include-images")), host.version)
        print(k0s_config.dump_yaml(config), end="")
        return 0
    if command == "validate":
        parsed = f.parse(rest, common + [f.Flag("config", short="c")])
        path = parsed.get("config")
        if not path:
            raise K0sError("--config can't be empty")
        if path == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(host.path(path)) as file:
                    text = file.read()
            except OSError as error:
                raise K0sError("failed to read config: open %s: %s" % (path, (error.strerror or "").lower()))
        k0s_config.parse_and_validate(text, path)
        return 0
    if command in ("edit", "status"):
        raise K0sError("k0s config %s needs dynamic configuration, which the k0s test double does not support" % command)
    raise K0sError('unknown command "%s" for "k0s config"' % command)


def cmd_etcd(host, argv):
    if not argv:
        print("Manage etcd cluster\n\nUsage:\n  k0s etcd [command]\n\nAvailable Commands:\n  leave\n  member-list")
        return 0
    command, rest = argv[0], argv[1:]
    common = [f.Flag("data-dir"), f.Flag("config", short="c"), f.Flag("status-socket")] + f.DEBUG_FLAGS
    host.require_root()
    cluster = Cluster(host)
    if command == "member-list":
        parsed = f.parse(rest, common)
        status = _running_status(host, parsed)
        if status.get("Role") != "controller":
            raise K0sError("etcd member-list can only be run on a controller")
        print(json.dumps({"members": cluster.etcd_members()}))
        return 0
    if command == "leave":
        parsed = f.parse(rest, common + [f.Flag("peer-address")])
        status = _running_status(host, parsed)
        if status.get("Role") != "controller":
            raise K0sError("etcd leave can only be run on a controller")
        storage = ((status.get("ClusterConfig") or {}).get("spec") or {}).get("storage") or {}
        address = parsed.get("peer-address") or (storage.get("etcd") or {}).get("peerAddress") or host.address
        url = "https://%s:2380" % address
        with cluster.locked():
            members = cluster.etcd_members()
            names = [name for name, peer in members.items() if peer == url]
            if not names:
                raise K0sError("etcd member with peer address %s not found" % url)
            for name in names:
                members.pop(name)
            cluster.save_etcd_members(members)
        cluster.event("etcd-leave", peerAddress=address, members=names)
        print('time="%s" level=info msg="Successfully left the cluster" peerURL="%s"' % (rfc3339(), url), file=sys.stderr)
        return 0
    raise K0sError('unknown command "%s" for "k0s etcd"' % command)


def cmd_kubeconfig(host, argv):
    if not argv or argv[0] != "admin":
        raise K0sError("the k0s test double supports only `k0s kubeconfig admin`")
    parsed = f.parse(argv[1:], [f.Flag("data-dir"), f.Flag("config", short="c")] + f.DEBUG_FLAGS)
    host.require_root()
    path = _data_dir(parsed) + "/pki/admin.conf"
    try:
        with open(host.path(path)) as file:
            text = file.read()
    except OSError as error:
        raise K0sError(
            "failed to read admin config, check if the control plane is initialized on this node: open %s: %s"
            % (path, (error.strerror or "").lower())
        )
    info = Cluster(host).info() or {}
    api = ((info.get("clusterConfig") or {}).get("spec") or {}).get("api") or {}
    address = api.get("externalAddress") or host.address
    print(text.replace("https://localhost:6443", "https://%s:%d" % (address, api.get("port", 6443))), end="")
    return 0


def cmd_airgap(host, argv):
    if not argv:
        print("Manage airgap setup\n\nUsage:\n  k0s airgap [command]\n\nAvailable Commands:\n  bundle-artifacts\n  list-images")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list-images":
        parsed = f.parse(rest, [f.Flag("all", "bool"), f.Flag("config", short="c"), f.Flag("platform"), f.Flag("data-dir")] + f.DEBUG_FLAGS)
        cluster_config = None
        if parsed.get("config"):
            from . import config as k0s_config

            with open(host.path(parsed.get("config"))) as file:
                cluster_config = k0s_config.parse_and_validate(file.read(), parsed.get("config"))
        for image in versions.system_images(host.version, cluster_config, bool(parsed.get("all"))):
            print(image)
        return 0
    if command == "bundle-artifacts":
        raise K0sError("bundle-artifacts needs registry access, which the k0s test double does not have; use scripts/lab-artifacts")
    raise K0sError('unknown command "%s" for "k0s airgap"' % command)


def cmd_sysinfo(host, argv):
    parsed = f.parse(argv, [f.Flag("controller", "bool"), f.Flag("worker", "bool"), f.Flag("data-dir"), f.Flag("output", short="o")] + f.DEBUG_FLAGS)
    output = parsed.get("output", "text")
    if output not in ("text", "json", "yaml"):
        raise K0sError('unknown output format: "%s"' % output)
    data_dir = _data_dir(parsed)
    probe_dir = host.path(data_dir)
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    stat = os.statvfs(probe_dir)
    available = stat.f_bavail * stat.f_frsize
    with open("/proc/meminfo") as file:
        memory = int(file.readline().split()[1]) * 1024
    probes = [
        ("Total memory", "%.1f GiB" % (memory / 2**30), "pass" if memory >= 1 << 30 else "warning"),
        ("Disk space available for %s" % data_dir, "%.1f MiB" % (available / 2**20), "pass" if available >= 1 << 30 else "warning"),
        ("Operating system", "Linux", "pass"),
        ("Linux kernel release", os.uname().release, "pass"),
        ("Executable in PATH: mount", shutil.which("mount") or "not found", "pass" if shutil.which("mount") else "warning"),
    ]
    if output == "text":
        for name, value, result in probes:
            print("%s: %s (%s)" % (name, value, result))
    else:
        from . import config as k0s_config

        document = [{"description": name, "value": value, "result": result} for name, value, result in probes]
        print(json.dumps(document, indent=2) if output == "json" else k0s_config.dump_yaml(document), end="\n" if output == "json" else "")
    return 0


BACKUP_FILES = ("cluster.json", "tokens.json", "etcd.json", "objects.json")


def cmd_backup(host, argv):
    parsed = f.parse(argv, [f.Flag("save-path"), f.Flag("data-dir"), f.Flag("config", short="c"), f.Flag("status-socket")] + f.DEBUG_FLAGS)
    host.require_root()
    save_path = parsed.get("save-path")
    if not save_path:
        raise K0sError("save-path is required")
    if save_path != "-" and not os.path.isdir(host.path(save_path)):
        raise K0sError("the save-path directory (%s) does not exist" % save_path)
    data_dir = _data_dir(parsed)
    if not os.path.isdir(host.path(data_dir)):
        raise K0sError("cannot find data-dir (%s). check your environment and/or command input and try again" % data_dir)
    status = _running_status(host, parsed)
    if status.get("Role") != "controller":
        raise K0sError("backup command must be run on the controller node, have %s" % status.get("Role"))
    import io
    import tarfile

    cluster = Cluster(host)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in BACKUP_FILES:
            path = cluster.file(name)
            if os.path.exists(path):
                archive.add(path, arcname="cluster/" + name)
        pki = host.path(data_dir + "/pki")
        if os.path.isdir(pki):
            archive.add(pki, arcname="pki")
        config_path = host.path(service.DEFAULT_CONFIG)
        if os.path.exists(config_path):
            archive.add(config_path, arcname="k0s.yaml")
    stamp = time.strftime("%Y-%m-%dT%H_%M_%S_000Z", time.gmtime())
    if save_path == "-":
        sys.stdout.buffer.write(buffer.getvalue())
    else:
        target = os.path.join(host.path(save_path), "k0s_backup_%s.tar.gz" % stamp)
        with open(target, "wb") as file:
            file.write(buffer.getvalue())
    cluster.event("backup", file="k0s_backup_%s.tar.gz" % stamp)
    print('time="%s" level=info msg="Done in 0.01s"' % rfc3339(), file=sys.stderr)
    return 0


def cmd_restore(host, argv):
    parsed = f.parse(argv, [f.Flag("config-out"), f.Flag("data-dir")] + f.DEBUG_FLAGS)
    host.require_root()
    if not parsed.args:
        raise K0sError("path to backup archive expected")
    for role in ("controller", "worker"):
        if service.running_pid(host, role):
            raise K0sError("k0s seems to be running! k0s must be down during the restore operation")
    import io
    import tarfile

    source = parsed.args[0]
    data = sys.stdin.buffer.read() if source == "-" else open(host.path(source), "rb").read()
    data_dir = _data_dir(parsed)
    cluster = Cluster(host)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        with cluster.locked():
            for member in archive.getmembers():
                if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                    continue
                content = archive.extractfile(member).read()
                if member.name.startswith("cluster/"):
                    target = cluster.file(member.name.split("/", 1)[1])
                elif member.name.startswith("pki/"):
                    target = host.path(data_dir + "/" + member.name)
                elif member.name == "k0s.yaml":
                    stamp = time.strftime("%Y-%m-%dT%H_%M_%S_000Z", time.gmtime())
                    target = host.path(parsed.get("config-out") or os.path.join(os.getcwd(), "k0s_%s.yaml" % stamp))
                else:
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as file:
                    file.write(content)
            info = cluster.info()
            if info:
                # The restored cluster has this host as its only controller, as a restored etcd would.
                info["controllers"] = [host.name]
                cluster.save_info(info)
                cluster.save_etcd_members({host.name: "https://%s:2380" % host.address})
    cluster.event("restore", file=source)
    return 0


def _loaded(module, function):
    """A command whose module is imported when the command runs."""

    def run(host, argv):
        return getattr(importlib.import_module("." + module, __package__), function)(host, argv)

    return run


COMMANDS = {
    "version": cmd_version,
    "install": service.install,
    "start": service.start,
    "stop": service.stop,
    "status": service.status,
    "reset": service.reset,
    "token": cmd_token,
    "config": cmd_config,
    "etcd": cmd_etcd,
    "kubeconfig": cmd_kubeconfig,
    "airgap": cmd_airgap,
    "sysinfo": cmd_sysinfo,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "kubectl": _loaded("kubectl", "run"),
    "kc": _loaded("kubectl", "run"),
}


def main(executable, argv):
    host_version = os.environ.get("K0S_DOUBLE_VERSION")
    if not host_version:
        print("Error: K0S_DOUBLE_VERSION is not set; run the double through a wrapper in tests/k0s/bin", file=sys.stderr)
        return 1
    host = Host(executable, host_version)
    if os.path.basename(executable) in ("kubectl", "k0s-kubectl"):
        argv = ["kubectl"] + argv
    try:
        # Every invocation shows which binary version the host runs now. Users without write
        # access to the lab folder (ops without sudo) are not recorded.
        Cluster(host).note_binary()
    except OSError:
        pass
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command in ("controller", "server", "worker"):
            from . import service_process

            return service_process.run_service(host, "worker" if command == "worker" else "controller", rest)
        handler = COMMANDS.get(command)
        if handler is None:
            raise K0sError('unknown command "%s" for "k0s"' % command)
        return handler(host, rest)
    except K0sError as error:
        print("Error: %s" % error, file=sys.stderr)
        return 1
    except KubectlError as error:
        print(error, file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
