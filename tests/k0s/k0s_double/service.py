"""The k0s services: `install`, `start`, `stop`, `status`, `reset`, and the service process itself
(`k0s controller ...` / `k0s worker ...`, what the unit's ExecStart runs).

Lab hosts have no init system, so the double keeps what systemd would keep under
/run/k0s-double: `<unit>.pid` (pid and start time of the running service) and `<unit>.log`
(its output). The unit file itself is written where systemd reads it.
"""

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from . import flags as f
from .errors import K0sError
from .host import rfc3339
from .store import Cluster

UNIT_DIR = "/etc/systemd/system"
INIT_DIR = "/run/k0s-double"
RUN_DIR = "/run/k0s"
DEFAULT_CONFIG = "/etc/k0s/k0s.yaml"
DEFAULT_DATA_DIR = "/var/lib/k0s"
UNITS = {"controller": "k0scontroller", "worker": "k0sworker"}
STOP_TIMEOUT = 10.0
STATUS_TIMEOUT = 10.0

WORKER_FLAGS = [
    f.Flag("token-file"),
    f.Flag("kubelet-extra-args"),
    f.Flag("kubelet-root-dir"),
    f.Flag("labels", "list"),
    f.Flag("taints", "list"),
    f.Flag("profile"),
    f.Flag("enable-cloud-provider", "bool"),
    f.Flag("iptables-mode"),
    f.Flag("cri-socket"),
    f.Flag("logging", "list", "l"),
    f.Flag("ignore-pre-flight-checks", "bool"),
    f.Flag("data-dir"),
    f.Flag("status-socket"),
] + f.DEBUG_FLAGS
CONTROLLER_FLAGS = WORKER_FLAGS + [
    f.Flag("config", short="c"),
    f.Flag("enable-worker", "bool"),
    f.Flag("single", "bool"),
    f.Flag("no-taints", "bool"),
    f.Flag("disable-components", "list"),
    f.Flag("enable-dynamic-config", "bool"),
    f.Flag("enable-k0s-cloud-provider", "bool"),
    f.Flag("k0s-cloud-provider-port", "int"),
    f.Flag("k0s-cloud-provider-update-frequency"),
    f.Flag("enable-metrics-scraper", "bool"),
    f.Flag("kube-controller-manager-extra-args"),
    f.Flag("init-only", "bool"),
    f.Flag("feature-gates", "list"),
]
INSTALL_ONLY_FLAGS = [f.Flag("force", "bool"), f.Flag("env", "array", "e"), f.Flag("start", "bool")]
PATH_FLAGS = ("data-dir", "kubelet-root-dir", "token-file", "config")


def flags_for(role):
    return CONTROLLER_FLAGS if role == "controller" else WORKER_FLAGS


def unit_path(host, role):
    return host.path("%s/%s.service" % (UNIT_DIR, UNITS[role]))


def installed_role(host):
    for role in ("controller", "worker"):
        if os.path.exists(unit_path(host, role)):
            return role
    return None


def stored_args(parsed, host):
    """The changed flags, sorted by name, as `--name=value`: what k0s stores in the unit."""
    args = []
    for name in sorted(parsed.values):
        if name in ("force", "env", "start"):
            continue
        value = parsed.values[name]
        if name in PATH_FLAGS and value:
            value = os.path.abspath(value)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(value)
        args.append("--%s=%s" % (name, value))
    return args


def _quote_unit_arg(arg):
    if any(char.isspace() for char in arg) or '"' in arg or "\\" in arg:
        return '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"')
    return arg


def unit_text(executable, role, args, env):
    exec_start = " ".join(_quote_unit_arg(arg) for arg in [executable, role] + args)
    environment = "".join('Environment="%s"\n' % entry for entry in env)
    return (
        "[Unit]\n"
        "Description=k0s - Zero Friction Kubernetes\n"
        "Documentation=https://docs.k0sproject.io\n"
        "ConditionFileIsExecutable=%s\n"
        "\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "StartLimitInterval=5\n"
        "StartLimitBurst=10\n"
        "ExecStart=%s\n"
        "%s"
        "\n"
        "RestartSec=10\n"
        "Delegate=yes\n"
        "KillMode=process\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "TimeoutStartSec=0\n"
        "LimitNOFILE=999999\n"
        "Restart=always\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n" % (executable, exec_start, environment)
    )


def parse_unit(text):
    """Returns (argv, environment dict) of a unit written by `install`."""
    argv, env = None, {}
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line[len("ExecStart=") :])
        elif line.startswith("Environment="):
            for entry in shlex.split(line[len("Environment=") :]):
                name, _, value = entry.partition("=")
                env[name] = value
    return argv, env


def install(host, argv):
    host.require_root()
    if not argv or argv[0] not in ("controller", "server", "worker"):
        print("Install k0s on a brand-new system. Must be run as root (or with sudo)\n\nUsage:\n  k0s install [command]\n\nAvailable Commands:\n  controller  Install k0s controller on a brand-new system. Must be run as root (or with sudo)\n  worker      Install k0s worker on a brand-new system. Must be run as root (or with sudo)")
        return 0
    role = "controller" if argv[0] in ("controller", "server") else "worker"
    parsed = f.parse(argv[1:], flags_for(role) + INSTALL_ONLY_FLAGS)
    if parsed.args:
        raise K0sError('unknown command "%s" for "k0s install %s"' % (parsed.args[0], argv[0]))
    if role == "controller":
        config_path = parsed.get("config")
        if config_path:
            try:
                with open(host.path(config_path)) as file:
                    text = file.read()
            except OSError as error:
                raise K0sError("invalid node config: failed to read %s: %s" % (config_path, error.strerror))
            from . import config as k0s_config

            try:
                k0s_config.parse_and_validate(text, config_path)
            except K0sError as error:
                raise K0sError("invalid node config: %s" % error)

    cluster = Cluster(host)
    path = unit_path(host, role)
    existing = installed_role(host)
    if existing and not parsed.get("force"):
        raise K0sError(
            "failed to install %s service: failed to install service: Init already exists: %s"
            % (role, host.logical(unit_path(host, existing)))
        )
    if existing and existing != role:
        os.remove(unit_path(host, existing))
    env = []
    for entry in parsed.get("env", []):
        name, has_value, value = entry.partition("=")
        env.append("%s=%s" % (name, value if has_value else os.environ.get(name, "")))
    executable = host.logical(os.path.abspath(host.executable))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as file:
        file.write(unit_text(executable, role, stored_args(parsed, host), env))
    os.replace(path + ".tmp", path)
    cluster.event("install", role=role, version=host.version, args=stored_args(parsed, host), force=bool(parsed.get("force")))
    if parsed.get("start"):
        return start(host, [])
    return 0


# The init system stand-in.


def _pid_file(host, role):
    return host.path("%s/%s.pid" % (INIT_DIR, UNITS[role]))


def _log_file(host, role):
    return host.path("%s/%s.log" % (INIT_DIR, UNITS[role]))


def _start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as file:
            return file.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def running_pid(host, role):
    """The pid of the role's service if it runs (checked by start time, as pids are reused)."""
    try:
        with open(_pid_file(host, role)) as file:
            pid_text, start_text = file.read().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if _start_time(pid) != start_text:
        return None
    try:
        with open("/proc/%d/stat" % pid) as file:
            if file.read().rsplit(") ", 1)[1].startswith("Z"):
                return None
    except OSError:
        return None
    return pid


def start(host, argv):
    host.require_root()
    f.parse(argv, f.DEBUG_FLAGS)
    role = installed_role(host)
    if role is None:
        raise K0sError("k0s has not been installed as a service")
    if running_pid(host, role):
        raise K0sError("already running")
    with open(unit_path(host, role)) as file:
        command, unit_env = parse_unit(file.read())
    if not command:
        raise K0sError("failed to start service: %s has no ExecStart" % host.logical(unit_path(host, role)))
    env = host.service_env()
    env.update(unit_env)
    command[0] = host.path(command[0])
    os.makedirs(host.path(INIT_DIR), exist_ok=True)
    log = open(_log_file(host, role), "a")
    log.write("%s starting %s\n" % (rfc3339(), " ".join(command)))
    log.flush()
    try:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/"
        )
    except OSError as error:
        raise K0sError("failed to start service: %s: %s" % (command[0], error.strerror))
    with open(_pid_file(host, role), "w") as file:
        file.write("%d %s\n" % (process.pid, _start_time(process.pid) or "0"))
    Cluster(host).event("start", role=role, version=host.version)
    return 0


def stop(host, argv):
    host.require_root()
    f.parse(argv, f.DEBUG_FLAGS)
    role = installed_role(host)
    if role is None:
        raise K0sError("k0s has not been installed as a service")
    pid = running_pid(host, role)
    if pid is None:
        raise K0sError("already stopped")
    record = Cluster(host).host_record(host.name) or {}
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running_pid(host, role) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running_pid(host, role):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.remove(_pid_file(host, role))
    Cluster(host).event("stop", role=role, version=record.get("version", host.version))
    return 0


# Status over the status socket.


def _get_status(path, timeout):
    """The body of `GET /status` over the Unix socket at `path`, in HTTP/1.0 so that the service
    closes the connection after its response. Plain sockets keep `k0s status`, which installers run
    often, from importing an HTTP client."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).partition(b"\r\n\r\n")[2]


def socket_path(host, parsed=None):
    explicit = parsed.get("status-socket") if parsed else None
    return explicit or RUN_DIR + "/status.sock"


def query_status(host, logical_socket):
    """The running service's status, or K0sError in the words of `k0s status`."""
    path = host.path(logical_socket)
    prefix = 'status: can\'t get "status" via "%s": Get "http://localhost/status": ' % logical_socket
    if not host.is_root:
        raise K0sError(prefix + "dial unix %s: connect: permission denied" % logical_socket)
    try:
        body = _get_status(path, STATUS_TIMEOUT)
    except FileNotFoundError:
        raise K0sError(prefix + "dial unix %s: connect: no such file or directory" % logical_socket)
    except ConnectionRefusedError:
        raise K0sError(prefix + "dial unix %s: connect: connection refused" % logical_socket)
    except socket.timeout:
        raise K0sError(prefix + "context deadline exceeded")
    except OSError as error:
        raise K0sError(prefix + "dial unix %s: connect: %s" % (logical_socket, (error.strerror or str(error)).lower()))
    if not body:
        raise K0sError("k0s is not running")
    return json.loads(body)


def status(host, argv):
    parsed = f.parse(argv, [f.Flag("output", short="o"), f.Flag("status-socket"), f.Flag("max-count", "int")] + f.DEBUG_FLAGS)
    if parsed.args and parsed.args[0] == "components":
        raise K0sError("k0s status components is not supported by the k0s test double")
    if parsed.args:
        raise K0sError('unknown command "%s" for "k0s status"' % parsed.args[0])
    result = query_status(host, socket_path(host, parsed))
    output = parsed.get("output", "")
    if output == "json":
        print(json.dumps(result, indent=3))
    elif output == "yaml":
        from . import config as k0s_config

        print(k0s_config.dump_yaml(result), end="")
    elif output:
        raise K0sError('unknown output format: "%s"' % output)
    else:
        print("Version: %s" % result["Version"])
        print("Process ID: %d" % result["Pid"])
        print("Role: %s" % result["Role"])
        print("Workloads: %s" % str(result["Workloads"]).lower())
        print("SingleNode: %s" % str(result["SingleNode"]).lower())
        if result["Workloads"]:
            connection = result["WorkerToAPIConnectionStatus"]
            print("Kube-api probing successful: %s" % str(connection["Success"]).lower())
            print("Kube-api probing last error: %s" % connection["Message"])
        print("Init System: %s" % result["SysInit"])
        print("Service file: %s" % result["StubFile"])
    return 0


# reset


def reset(host, argv):
    host.require_root()
    parsed = f.parse(
        argv, [f.Flag("data-dir"), f.Flag("kubelet-root-dir"), f.Flag("cri-socket"), f.Flag("config", short="c")] + f.DEBUG_FLAGS
    )
    role = installed_role(host)
    for candidate in ("controller", "worker"):
        if running_pid(host, candidate):
            raise K0sError("another k0s process is still running, please stop k0s before reset")
    data_dir = parsed.get("data-dir") or DEFAULT_DATA_DIR
    cluster = Cluster(host)
    for path in [data_dir, parsed.get("kubelet-root-dir"), RUN_DIR, INIT_DIR]:
        if path:
            shutil.rmtree(host.path(path), ignore_errors=True)
    for candidate in ("controller", "worker"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(unit_path(host, candidate))
    with cluster.locked():
        cluster.remove_host_record(host.name)
        info = cluster.info()
        if info and host.name in info.get("controllers", []):
            info["controllers"].remove(host.name)
            if info["controllers"]:
                cluster.save_info(info)
            else:
                # No controller keeps the cluster's data any more: the cluster is gone.
                cluster.wipe()
    cluster.event("reset", role=role, version=host.version, dataDir=data_dir)
    log = 'time="%s" level=%s msg="%s"'
    print(log % (rfc3339(), "info", "k0s cleanup operations done."), file=sys.stderr)
    print(log % (rfc3339(), "warning", "To ensure a full reset, a node reboot is recommended."), file=sys.stderr)
    return 0
