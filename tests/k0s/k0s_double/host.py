"""The host the double runs on: its name and address, its private paths, and the lab folder it
shares with the other hosts.

On a lab host every path is the real one and `scripts/lab` records the host's identity in
/run/airlock-lab/host/host.json. Run directly on a machine (the double's own tests), the
environment describes the host:

  K0S_DOUBLE_ROOT       a folder used as the host's `/`; every absolute path the double
                        touches lies below it, and root privileges are not required
  K0S_DOUBLE_CLUSTER    the cluster folder shared by the hosts of one test
  K0S_DOUBLE_HOSTNAME   the host name (default: the machine's)
  K0S_DOUBLE_ADDRESS    the host address (default 127.0.0.1)
  K0S_DOUBLE_HEARTBEAT_TIMEOUT  seconds without a heartbeat before a node turns NotReady
"""

import json
import os
import socket
import time

from .errors import K0sError

# Where scripts/lab mounts the lab's folders inside every host.
LAB_MOUNT = "/run/airlock-lab"
DEFAULT_HEARTBEAT_TIMEOUT = 5.0
# How often a running service heartbeats, imports image bundles and applies stacks.
LOOP_INTERVAL = 0.5

PASSTHROUGH_ENV = (
    "K0S_DOUBLE_ROOT",
    "K0S_DOUBLE_CLUSTER",
    "K0S_DOUBLE_HOSTNAME",
    "K0S_DOUBLE_ADDRESS",
    "K0S_DOUBLE_HEARTBEAT_TIMEOUT",
    "K0S_DOUBLE_HOME",
)


class Host:
    """The host this process runs on, and the cluster folder it shares."""

    def __init__(self, executable, version):
        self.executable = executable
        self.version = version
        self.root = os.environ.get("K0S_DOUBLE_ROOT", "").rstrip("/")
        identity = {}
        try:
            with open(self.path(LAB_MOUNT + "/host/host.json")) as file:
                identity = json.load(file)
        except (OSError, ValueError):
            pass
        self.name = os.environ.get("K0S_DOUBLE_HOSTNAME") or identity.get("name") or socket.gethostname()
        self.name = self.name.lower()
        self.address = os.environ.get("K0S_DOUBLE_ADDRESS") or identity.get("address") or "127.0.0.1"
        self.cluster_dir = os.environ.get("K0S_DOUBLE_CLUSTER") or self.path(LAB_MOUNT + "/cluster")
        self._heartbeat_timeout = None

    @property
    def direct(self):
        """True when the double runs directly on a machine rather than on a lab host."""
        return bool(self.root)

    def path(self, path):
        """Maps a path as the host sees it to the file the double opens."""
        path = os.path.abspath(path)
        if self.root and not (path == self.root or path.startswith(self.root + "/")):
            return self.root + path
        return path

    def logical(self, path):
        """Maps a file the double opens back to the path the host sees, for messages."""
        if self.root and path.startswith(self.root + "/"):
            return path[len(self.root) :]
        return path

    def require_root(self):
        if not self.direct and os.geteuid() != 0:
            raise K0sError("this command must be run as root")

    @property
    def is_root(self):
        return self.direct or os.geteuid() == 0

    @property
    def heartbeat_timeout(self):
        if self._heartbeat_timeout is None:
            value = os.environ.get("K0S_DOUBLE_HEARTBEAT_TIMEOUT")
            if value is None:
                try:
                    with open(os.path.join(self.cluster_dir, "config.json")) as file:
                        value = json.load(file).get("heartbeatTimeoutSeconds")
                except (OSError, ValueError):
                    value = None
            self._heartbeat_timeout = float(value) if value is not None else DEFAULT_HEARTBEAT_TIMEOUT
        return self._heartbeat_timeout

    def service_env(self):
        """The environment a service starts with: a clean one, as systemd gives, plus the
        variables that place a directly run double."""
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for name in PASSTHROUGH_ENV:
            if name in os.environ:
                env[name] = os.environ[name]
        return env


def now():
    return time.time()


def rfc3339(timestamp=None):
    timestamp = now() if timestamp is None else timestamp
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def rfc3339_millis(timestamp=None):
    timestamp = now() if timestamp is None else timestamp
    millis = int((timestamp % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + ".%03dZ" % millis
