"""The cluster's state in the lab folder that all hosts of one lab share.

  lock                  flock(2) lock for every read-modify-write of the files below
  cluster.json          initialised cluster: CA, cluster id, controllers with data, ClusterConfig
  tokens.json           join tokens by id
  etcd.json             etcd members: name -> peer URL
  objects.json          the API objects, keyed by group/kind/namespace/name
  hosts/<name>.json     what a running service reports each heartbeat; written only by that
                        service, so it needs no lock
  binaries/<name>       the k0s version last run on a host
  events.jsonl          the ordered event log that upgrade tests read

Files are replaced by rename, so readers without the lock always see a whole file. `scripts/lab
freeze` takes the lock while it stops a host, so a frozen process never has it.
"""

import contextlib
import fcntl
import json
import os
import time

from .errors import K0sError
from .host import now, rfc3339_millis

LOCK_TIMEOUT = 30.0


def read_json(path, default=None):
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        return default
    except ValueError as error:
        raise K0sError("corrupt state file %s: %s" % (path, error))


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w") as file:
        json.dump(value, file, indent=1, sort_keys=True)
    os.replace(temporary, path)


def object_key(obj):
    api_version = obj.get("apiVersion", "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    metadata = obj.get("metadata") or {}
    return "%s/%s/%s/%s" % (group, obj.get("kind", ""), metadata.get("namespace") or "", metadata.get("name", ""))


class Cluster:
    """Accessors for the shared cluster folder."""

    def __init__(self, host):
        self.host = host
        self.dir = host.cluster_dir

    def file(self, *parts):
        return os.path.join(self.dir, *parts)

    def require(self):
        if not os.path.isdir(self.dir):
            raise K0sError(
                "the lab's cluster folder %s is missing: run the double on a lab host, or set K0S_DOUBLE_CLUSTER" % self.dir
            )

    @contextlib.contextmanager
    def locked(self):
        self.require()
        with open(self.file("lock"), "a") as lock:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise K0sError(
                            "the cluster state lock %s stayed taken for %d seconds" % (self.file("lock"), LOCK_TIMEOUT)
                        )
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # Cluster identity.

    def info(self):
        return read_json(self.file("cluster.json"))

    def save_info(self, info):
        write_json(self.file("cluster.json"), info)

    def wipe(self):
        """Forgets the whole cluster, after the last controller with data was reset."""
        for name in ("cluster.json", "tokens.json", "etcd.json", "objects.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(name))

    # Tokens and etcd.

    def tokens(self):
        return read_json(self.file("tokens.json"), {})

    def save_tokens(self, tokens):
        write_json(self.file("tokens.json"), tokens)

    def etcd_members(self):
        return read_json(self.file("etcd.json"), {})

    def save_etcd_members(self, members):
        write_json(self.file("etcd.json"), members)

    # API objects.

    def objects(self):
        return read_json(self.file("objects.json"), {"resourceVersion": 0, "items": {}})

    def save_objects(self, store):
        write_json(self.file("objects.json"), store)

    # Host reports.

    def host_record(self, name):
        return read_json(self.file("hosts", name + ".json"))

    def host_records(self):
        records = {}
        directory = self.file("hosts")
        if os.path.isdir(directory):
            for entry in sorted(os.listdir(directory)):
                if entry.endswith(".json"):
                    record = read_json(os.path.join(directory, entry))
                    if record:
                        records[entry[: -len(".json")]] = record
        return records

    def save_host_record(self, name, record):
        self.require()
        write_json(self.file("hosts", name + ".json"), record)

    def remove_host_record(self, name):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file("hosts", name + ".json"))

    def is_fresh(self, record):
        """Whether a host record comes from a service that is running and heartbeating."""
        if not record or record.get("stopped") or record.get("failed"):
            return False
        return now() - record.get("heartbeat", 0) <= self.host.heartbeat_timeout

    def api_record(self, address):
        """The record of a running controller whose API listens on `address`, if any."""
        for record in self.host_records().values():
            if record.get("controller") and record.get("address") == address and self.is_fresh(record):
                return record
        return None

    def any_api_record(self):
        for record in self.host_records().values():
            if record.get("controller") and self.is_fresh(record):
                return record
        return None

    # Event log.

    def event(self, event, **fields):
        """Appends one event; a single write with O_APPEND keeps concurrent lines whole."""
        if not os.path.isdir(self.dir):
            return
        entry = {"time": rfc3339_millis(), "host": self.host.name, "event": event}
        entry.update(fields)
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        fd = os.open(self.file("events.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def note_binary(self):
        """Records a `binary` event when this host runs a k0s version it did not run before."""
        if not os.path.isdir(self.dir):
            return
        path = self.file("binaries", self.host.name)
        try:
            with open(path) as file:
                previous = file.read().strip()
        except FileNotFoundError:
            previous = None
        if previous == self.host.version:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as file:
            file.write(self.host.version + "\n")
        os.replace(path + ".tmp", path)
        self.event("binary", version=self.host.version, previous=previous)


def new_uid():
    import uuid  # imported here: its start-up cost is paid only by runs that create objects

    return str(uuid.uuid4())
