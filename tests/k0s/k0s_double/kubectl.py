"""`k0s kubectl`: the subset of kubectl that installers use, against the double's object store.

Connection and credentials are checked like a real API server would: the kubeconfig's server
must be the address of a running controller (or localhost on one), and its user must hold a
certificate of this cluster's CA or a valid bootstrap token (which may only read /version and
/readyz).
"""

import base64
import binascii
import calendar
import json
import os
import re
import sys
import time
from urllib.parse import urlparse

import yaml

from . import kube, tokens, versions
from .config import dump_yaml, load_all_yaml
from .errors import K0sError, KubectlError
from .store import Cluster, object_key

DEFAULT_ADMIN_CONF = "/var/lib/k0s/pki/admin.conf"
BOOL_FLAGS = {
    "all-namespaces": "A",
    "force": None,
    "ignore-daemonsets": None,
    "delete-emptydir-data": None,
    "delete-local-data": None,
    "overwrite": None,
    "ignore-not-found": None,
    "wait": None,
    "disable-eviction": None,
    "watch": "w",
    "no-headers": None,
    "show-labels": None,
    "server-side": None,
    "force-conflicts": None,
    "recursive": "R",
    "all": None,
    "insecure-skip-tls-verify": None,
}
VALUE_FLAGS = {
    "kubeconfig": None,
    "namespace": "n",
    "output": "o",
    "filename": "f",
    "selector": "l",
    "field-selector": None,
    "raw": None,
    "data-dir": None,
    "grace-period": None,
    "timeout": None,
    "for": None,
    "pod-selector": None,
    "skip-wait-for-delete-timeout": None,
    "request-timeout": None,
    "context": None,
    "cluster": None,
    "user": None,
    "server": None,
    "field-manager": None,
    "template": None,
    "chunk-size": None,
    "validate": None,
    "cascade": None,
    "dry-run": None,
}
SHORT = {short: name for name, short in list(BOOL_FLAGS.items()) + list(VALUE_FLAGS.items()) if short}


class Options:
    def __init__(self):
        self.values = {}
        self.args = []

    def get(self, name, default=None):
        return self.values.get(name, default)


def parse_args(argv):
    options = Options()
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            options.args.extend(argv[index:])
            break
        name = value = None
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            if not has_value:
                value = None
        elif arg.startswith("-") and len(arg) > 1 and arg != "-":
            short = arg[1]
            if short not in SHORT:
                raise KubectlError("error: unknown shorthand flag: '%s' in %s" % (short, arg))
            name = SHORT[short]
            rest = arg[2:]
            value = rest[1:] if rest.startswith("=") else (rest or None)
        else:
            options.args.append(arg)
            continue
        if name in BOOL_FLAGS:
            options.values[name] = value not in ("false", "False", "0")
        elif name in VALUE_FLAGS:
            if value is None:
                if index >= len(argv):
                    raise KubectlError("error: flag needs an argument: --%s" % name)
                value = argv[index]
                index += 1
            if name == "filename":
                options.values.setdefault(name, []).append(value)
            else:
                options.values[name] = value
        else:
            raise KubectlError("error: unknown flag: --%s" % name)
    return options


class Session:
    """One kubectl invocation: the host, its kubeconfig identity and the cluster state."""

    def __init__(self, host, options):
        self.host = host
        self.options = options
        self.cluster = Cluster(host)
        self.user = None

    def connect(self):
        """Checks the kubeconfig's server and user; raises KubectlError as kubectl would."""
        explicit = self.options.get("kubeconfig") or os.environ.get("KUBECONFIG")
        data_dir = self.options.get("data-dir")
        path = explicit or ((data_dir.rstrip("/") + "/pki/admin.conf") if data_dir else DEFAULT_ADMIN_CONF)
        try:
            with open(self.host.path(path)) as file:
                config = yaml.safe_load(file)
        except FileNotFoundError:
            if explicit:
                raise KubectlError('error: stat %s: no such file or directory' % path)
            raise K0sError("cannot stat k0s kubeconfig, is the server running?")
        except PermissionError:
            raise KubectlError('error: error loading config file "%s": open %s: permission denied' % (path, path))
        except yaml.YAMLError as error:
            raise KubectlError('error: error loading config file "%s": %s' % (path, error))
        try:
            cluster = config["clusters"][0]["cluster"]
            user = config["users"][0]["user"]
        except (KeyError, IndexError, TypeError):
            raise KubectlError("error: invalid configuration: no configuration has been provided")
        server = urlparse(cluster.get("server", ""))
        address = server.hostname
        port = server.port or 443
        if address in ("localhost", "127.0.0.1", "::1") and self.host.address != address:
            record = self.cluster.host_record(self.host.name)
            api = record if record and record.get("controller") and self.cluster.is_fresh(record) else None
        else:
            api = self.cluster.api_record(address)
            if api is None and not any(r.get("address") == address for r in self.cluster.host_records().values()):
                api = self.cluster.any_api_record()  # an external address in front of the controllers
        if api is None:
            raise KubectlError(
                "The connection to the server %s:%d was refused - did you specify the right host or port?" % (address, port)
            )
        info = self.cluster.info() or {}
        if user.get("token"):
            token = user["token"]
            token_id, _, secret = token.partition(".")
            entry = self.cluster.tokens().get(token_id)
            if not tokens.is_bootstrap(token) or entry is None or entry.get("secret") != secret or (
                entry.get("expires") is not None and entry["expires"] < time.time()
            ):
                raise KubectlError("error: You must be logged in to the server (Unauthorized)")
            self.user = "system:bootstrap:" + token_id
            return
        try:
            certificate = base64.b64decode(user.get("client-certificate-data", "")).decode()
        except (binascii.Error, ValueError):
            certificate = ""
        payload = tokens.read_pem(certificate)
        if not payload or payload.get("ca") != info.get("caId"):
            raise KubectlError("error: You must be logged in to the server (Unauthorized)")
        self.user = payload.get("subject", "")

    def require_read(self, resource):
        if self.user and self.user.startswith("system:bootstrap:"):
            raise KubectlError(
                'Error from server (Forbidden): %s is forbidden: User "%s" cannot list resource "%s" in API group "" at the cluster scope'
                % (resource, self.user, resource)
            )

    def require_write(self, resource):
        self.require_read(resource)
        if self.user and "system:node:" in self.user:
            raise KubectlError(
                'Error from server (Forbidden): %s is forbidden: User "%s" cannot update resource "%s"'
                % (resource, self.user.split(",")[0].replace("CN=", ""), resource)
            )

    @property
    def namespace(self):
        return self.options.get("namespace") or "default"


def run(host, argv):
    options = parse_args(argv)
    if not options.args:
        print("kubectl controls the Kubernetes cluster manager.\n\nThe k0s test double supports: get, apply, delete, cordon, uncordon, drain, taint, label, wait, rollout status, version.")
        return 0
    command, rest = options.args[0], options.args[1:]
    handler = COMMANDS.get(command)
    if handler is None:
        raise KubectlError('error: unknown command "%s" for "kubectl"' % command)
    session = Session(host, options)
    session.connect()
    return handler(session, rest)


# Output.


def print_objects(session, objects, single, kind=None):
    output = session.options.get("output") or ""
    if output == "json":
        print(json.dumps(objects[0] if single else as_list(objects), indent=4))
    elif output == "yaml":
        print(dump_yaml(objects[0] if single else as_list(objects)), end="")
    elif output == "name":
        for obj in objects:
            print("%s/%s" % (name_prefix(session, obj), obj["metadata"]["name"]))
    elif output.startswith(("jsonpath=", "jsonpath-as-json=")):
        template = output.split("=", 1)[1]
        print(render_jsonpath(template, objects[0] if single else as_list(objects)), end="")
    elif output.startswith(("template=", "go-template=")) or output in ("template", "go-template"):
        template = output.split("=", 1)[1] if "=" in output else session.options.get("template", "")
        print(render_go_template(template, objects[0] if single else as_list(objects)), end="")
    elif output in ("", "wide"):
        print_table(session, objects, kind)
    else:
        raise KubectlError('error: unable to match a printer suitable for the output format "%s"' % output)


def as_list(objects):
    return {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}


def name_prefix(session, obj):
    store = session.cluster.objects()
    kind = kube.kind_for_object(obj, kube.known_kinds(store))
    return kind.name_prefix if kind else obj["kind"].lower()


def age(obj):
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = max(0, int(time.time() - calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))))
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 7200:
        return "%dm" % (seconds // 60)
    return "%dh" % (seconds // 3600)


def print_table(session, objects, kind):
    """Prints objects as kubectl's tables: one table per kind, separated by a blank line."""
    kinds = []
    for obj in objects:
        if obj.get("kind") not in kinds:
            kinds.append(obj.get("kind"))
    if len(kinds) > 1:
        for index, kind_name in enumerate(kinds):
            if index:
                print()
            _print_kind_table(session, [obj for obj in objects if obj.get("kind") == kind_name])
        return
    _print_kind_table(session, objects)


def _print_kind_table(session, objects):
    if not objects:
        namespace = session.options.get("namespace")
        if namespace and not session.options.get("all-namespaces"):
            print("No resources found in %s namespace." % namespace, file=sys.stderr)
        else:
            print("No resources found", file=sys.stderr)
        return
    all_namespaces = session.options.get("all-namespaces")
    rows = []
    kind_name = objects[0].get("kind")
    if kind_name == "Node":
        header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        for node in objects:
            ready = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}.get("Ready")
            status = "Ready" if ready == "True" else "NotReady"
            if (node.get("spec") or {}).get("unschedulable"):
                status += ",SchedulingDisabled"
            roles = [label.split("/", 1)[1] for label in node["metadata"].get("labels", {}) if label.startswith("node-role.kubernetes.io/")]
            rows.append([node["metadata"]["name"], status, ",".join(roles) or "<none>", age(node), node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")])
    elif kind_name == "Deployment":
        header = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        for obj in objects:
            status = obj.get("status") or {}
            rows.append([obj["metadata"]["name"], "%d/%d" % (status.get("readyReplicas", 0), status.get("replicas", 0)), str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0)), age(obj)])
    elif kind_name == "DaemonSet":
        header = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        for obj in objects:
            status = obj.get("status") or {}
            counts = ["desiredNumberScheduled", "currentNumberScheduled", "numberReady", "updatedNumberScheduled", "numberAvailable"]
            rows.append([obj["metadata"]["name"]] + [str(status.get(count, 0)) for count in counts] + [age(obj)])
    elif kind_name == "Pod":
        header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        for obj in objects:
            status = obj.get("status") or {}
            containers = status.get("containerStatuses") or []
            ready = sum(1 for c in containers if c.get("ready"))
            reason = status.get("phase", "")
            for container in containers:
                waiting = (container.get("state") or {}).get("waiting")
                if waiting:
                    reason = waiting.get("reason", reason)
            rows.append([obj["metadata"]["name"], "%d/%d" % (ready, len(containers)), reason, "0", age(obj)])
    else:
        header = ["NAME", "AGE"]
        for obj in objects:
            rows.append([obj["metadata"]["name"], age(obj)])
    if all_namespaces and kind_name != "Node":
        header = ["NAMESPACE"] + header
        rows = [[obj["metadata"].get("namespace", "")] + row for obj, row in zip(objects, rows)]
    widths = [max(len(str(value)) for value in column) for column in zip(header, *rows)]
    for row in [header] + rows:
        print("   ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip())


def _path_value(value, path):
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render_go_template(template, value):
    def replace(match):
        path = [part for part in match.group(1).strip().split(".") if part]
        result = _path_value(value, path)
        return "<no value>" if result is None else (json.dumps(result) if isinstance(result, (dict, list)) else str(result))

    return re.sub(r"\{\{\s*(\.[^}]*?)\s*\}\}", replace, template)


def render_jsonpath(template, value):
    """Supports `{.a.b}`, `{.items[*].metadata.name}`, `{.items[0]...}` and
    `[?(@.type=="Ready")]` filters, which cover the usual readiness queries."""

    def evaluate(expression):
        results = [value]
        tokens_ = re.findall(r"\.([A-Za-z0-9_\-/]+)|\[(\*|\d+|\?\(@\.([A-Za-z0-9_]+)==[\"']([^\"']*)[\"']\))\]", expression)
        for name, bracket, filter_key, filter_value in tokens_:
            next_results = []
            for item in results:
                if name:
                    if isinstance(item, dict) and name in item:
                        next_results.append(item[name])
                elif bracket == "*":
                    if isinstance(item, list):
                        next_results.extend(item)
                    elif isinstance(item, dict):
                        next_results.extend(item.values())
                elif bracket.isdigit():
                    if isinstance(item, list) and int(bracket) < len(item):
                        next_results.append(item[int(bracket)])
                elif filter_key:
                    if isinstance(item, list):
                        next_results.extend(e for e in item if isinstance(e, dict) and str(e.get(filter_key)) == filter_value)
            results = next_results
        return " ".join(json.dumps(r) if isinstance(r, (dict, list)) else str(r).lower() if isinstance(r, bool) else str(r) for r in results)

    return re.sub(r"\{([^{}]*)\}", lambda match: evaluate(match.group(1)), template)


# get


def parse_targets(session, args):
    """Resolves `KIND [NAME...]`, `KIND/NAME ...` into [(Kind, name or None)]."""
    store = session.cluster.objects()
    kinds = kube.known_kinds(store)
    if not args:
        raise KubectlError("error: you must specify the type of resource to get")
    targets = []
    if "/" in args[0]:
        for arg in args:
            kind_text, _, name = arg.partition("/")
            kind = resolve_kind(kind_text, kinds)
            targets.append((kind, name))
        return targets
    kind_texts = args[0].split(",")
    for kind_text in kind_texts:
        kind = resolve_kind(kind_text, kinds)
        names = args[1:] or [None]
        targets.extend((kind, name) for name in names)
    return targets


def resolve_kind(text, kinds):
    kind = kube.resolve_resource(text, kinds)
    if kind is None:
        raise KubectlError('error: the server doesn\'t have a resource type "%s"' % text)
    return kind


def not_found(kind, name):
    return KubectlError('Error from server (NotFound): %s "%s" not found' % (kind.resource, name))


def find_objects(session, kind, name, view):
    namespace = None if session.options.get("all-namespaces") or not kind.namespaced else session.namespace
    if kind.kind == "Pod":
        candidates = view.pod_objects(namespace)
    else:
        candidates = [
            view.with_status(obj)
            for obj in view.items(kind.kind, namespace)
            if obj.get("apiVersion") == kind.api_version or kube.group_of(obj.get("apiVersion", "")) == kind.group
        ]
    selector = session.options.get("selector")
    if selector:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        candidates = [obj for obj in candidates if all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
    field_selector = session.options.get("field-selector")
    if field_selector:
        for part in field_selector.split(","):
            key, _, value = part.partition("=")
            candidates = [obj for obj in candidates if str(_path_value(obj, key.split("."))) == value]
    if name is not None:
        candidates = [obj for obj in candidates if obj["metadata"]["name"] == name]
        if not candidates:
            raise not_found(kind, name)
    return sorted(candidates, key=lambda obj: (obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))


def get(session, args):
    raw = session.options.get("raw")
    if raw is not None:
        return get_raw(session, raw)
    targets = parse_targets(session, args)
    for kind, _ in targets:
        session.require_read(kind.plural)
    view = kube.View(session.cluster)
    objects = []
    single = len(targets) == 1 and targets[0][1] is not None
    for kind, name in targets:
        objects.extend(find_objects(session, kind, name, view))
    print_objects(session, objects, single, targets[0][0])
    return 0


def get_raw(session, raw):
    path, _, query = raw.partition("?")
    if path in ("/readyz", "/livez", "/healthz"):
        if "verbose" in query:
            checks = ["ping", "log", "etcd", "etcd-readiness", "informer-sync", "poststarthook/start-apiserver-admission-initializer"]
            for check in checks:
                print("[+]%s ok" % check)
            print("%s check passed" % path.lstrip("/"))
        else:
            print("ok", end="")
        return 0
    if path == "/version":
        # Bootstrap tokens may read /version: k0sctl checks a worker's token this way.
        record = session.cluster.any_api_record() or {}
        version = record.get("version", session.host.version)
        major, minor, _ = versions.parse(version)
        print(json.dumps({
            "major": str(major),
            "minor": str(minor),
            "gitVersion": versions.kubernetes_version(version) + "+k0s",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }, indent=2))
        return 0
    session.require_read("nonResourceURL")
    raise KubectlError("Error from server (NotFound): the server could not find the requested resource")


# apply and delete


def read_manifests(session, filenames):
    """[(source name, [objects])] from -f files (`-` for stdin); raises KubectlError."""
    sources = []
    for filename in filenames:
        if filename == "-":
            text, source = sys.stdin.read(), "STDIN"
        else:
            path = session.host.path(filename)
            files = [path]
            if os.path.isdir(path):
                files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith((".yaml", ".yml", ".json")))
            text = ""
            for file_path in files:
                try:
                    with open(file_path) as file:
                        text += "\n---\n" + file.read()
                except OSError as error:
                    raise KubectlError('error: the path "%s" does not exist' % filename if isinstance(error, FileNotFoundError) else "error: %s" % error)
            source = filename
        try:
            documents = load_all_yaml(text)
        except yaml.YAMLError as error:
            raise KubectlError('error: error parsing %s: error converting YAML to JSON: %s' % (source, " ".join(str(error).split())))
        objects = []
        for document in documents:
            if isinstance(document, dict) and document.get("kind") == "List":
                objects.extend(document.get("items") or [])
            elif isinstance(document, dict):
                objects.append(document)
        sources.append((source, objects))
    return sources


def apply(session, args):
    filenames = session.options.get("filename")
    if not filenames:
        raise KubectlError("error: must specify one of -f and -k")
    session.require_write("objects")
    sources = read_manifests(session, filenames)
    failed = False
    with session.cluster.locked():
        store = session.cluster.objects()
        for source, objects in sources:
            for obj in objects:
                try:
                    result = kube.apply_object(store, obj, kube.known_kinds(store), session.options.get("namespace") or "default", source)
                    print("%s/%s %s" % (result.kind.name_prefix, result.obj["metadata"]["name"], result.action))
                except KubectlError as error:
                    print(error, file=sys.stderr)
                    failed = True
        session.cluster.save_objects(store)
    session.cluster.event("apply", objects=sum(len(objects) for _, objects in sources), failed=failed)
    return 1 if failed else 0


def delete(session, args):
    session.require_write("objects")
    ignore = session.options.get("ignore-not-found")
    failed = False
    with session.cluster.locked():
        store = session.cluster.objects()
        kinds = kube.known_kinds(store)
        targets = []
        for source, objects in read_manifests(session, session.options.get("filename") or []):
            for obj in objects:
                kind = kube.kind_for_object(obj, kinds)
                if kind is None:
                    print('error: resource mapping not found for name: "%s" namespace: "" from "%s": no matches for kind "%s" in version "%s"' % (obj.get("metadata", {}).get("name"), source, obj.get("kind"), obj.get("apiVersion")), file=sys.stderr)
                    failed = True
                    continue
                namespace = obj.get("metadata", {}).get("namespace") or session.namespace
                targets.append((kind, obj["metadata"]["name"], namespace if kind.namespaced else None))
        if args:
            for kind, name in parse_targets(session, args):
                if name is None:
                    raise KubectlError("error: resource(s) were provided, but no name was specified")
                targets.append((kind, name, session.namespace if kind.namespaced else None))
        # Kubernetes deletes a namespace asynchronously, so deleting its objects in the same
        # command still finds them; deleting namespaces last gives the same result.
        targets.sort(key=lambda target: target[0].kind == "Namespace")
        for kind, name, namespace in targets:
            key = object_key({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": name, "namespace": namespace}})
            if kube.delete_object(store, key) is None:
                if not ignore:
                    print('Error from server (NotFound): %s "%s" not found' % (kind.resource, name), file=sys.stderr)
                    failed = True
                continue
            print('%s "%s" deleted' % (kind.name_prefix, name))
            if kind.kind == "Node":
                session.cluster.event("delete-node", node=name)
        session.cluster.save_objects(store)
    return 1 if failed else 0


# nodes


def _update_node(session, name, change):
    session.require_write("nodes")
    with session.cluster.locked():
        store = session.cluster.objects()
        node = store["items"].get("/Node//" + name)
        if node is None:
            raise KubectlError('Error from server (NotFound): nodes "%s" not found' % name)
        message = change(node)
        store["resourceVersion"] = store.get("resourceVersion", 0) + 1
        session.cluster.save_objects(store)
    return message


def _set_unschedulable(session, name, value):
    def change(node):
        spec = node.setdefault("spec", {})
        if bool(spec.get("unschedulable")) == value:
            return "node/%s already %s" % (name, "cordoned" if value else "uncordoned")
        if value:
            spec["unschedulable"] = True
        else:
            spec.pop("unschedulable", None)
        return "node/%s %s" % (name, "cordoned" if value else "uncordoned")

    message = _update_node(session, name, change)
    print(message)
    if "already" not in message:
        session.cluster.event("cordon" if value else "uncordon", node=name)
    return 0


def cordon(session, args):
    for name in _node_names(args):
        _set_unschedulable(session, name, True)
    return 0


def uncordon(session, args):
    for name in _node_names(args):
        _set_unschedulable(session, name, False)
    return 0


def _node_names(args):
    if not args:
        raise KubectlError("error: USAGE: cordon NODE [flags]")
    return [arg.split("/", 1)[1] if arg.startswith(("node/", "nodes/")) else arg for arg in args]


def drain(session, args):
    from .tokens import parse_duration

    names = _node_names(args)
    timeout = parse_duration(session.options.get("timeout", "0s")) if session.options.get("timeout") else 0
    for name in names:
        view = kube.View(session.cluster)
        if not any(node["metadata"]["name"] == name for node in view.nodes()):
            raise KubectlError('Error from server (NotFound): nodes "%s" not found' % name)
        session.cluster.event("drain-started", node=name)
        _set_unschedulable(session, name, True)
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            problems, blocked, evicted = _drain_pass(session, name)
            if problems:
                print("error: unable to drain node \"%s\" due to error: %s, continuing command..." % (name, "; ".join(problems)), file=sys.stderr)
                print("There are pending nodes to be drained:\n %s" % name, file=sys.stderr)
                print("; ".join(problems), file=sys.stderr)
                session.cluster.event("drain-failed", node=name, error="; ".join(problems))
                return 1
            for pod in evicted:
                print("evicting pod %s" % pod)
                print("pod/%s evicted" % pod.split("/", 1)[1])
            if not blocked:
                break
            for pod in blocked:
                print('error when evicting pods/"%s" -n "%s" (will retry after 5s): Cannot evict pod as it would violate the pod\'s disruption budget.' % (pod.split("/", 1)[1], pod.split("/", 1)[0]), file=sys.stderr)
            if deadline is not None and time.monotonic() >= deadline:
                pods = ", ".join('pods/"%s" -n "%s"' % (p.split("/", 1)[1], p.split("/", 1)[0]) for p in blocked)
                message = "error when evicting %s: global timeout reached: %s" % (pods, session.options.get("timeout"))
                print("There are pending pods in node \"%s\" when an error occurred: %s" % (name, message), file=sys.stderr)
                print('error: unable to drain node "%s" due to error: [%s], continuing command...' % (name, message), file=sys.stderr)
                print("There are pending nodes to be drained:\n %s" % name, file=sys.stderr)
                print(message, file=sys.stderr)
                session.cluster.event("drain-failed", node=name, error=message)
                return 1
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())) if deadline else 1.0)
        print("node/%s drained" % name)
        session.cluster.event("drain", node=name)
    return 0


def _drain_pass(session, node_name):
    """One eviction pass: (refusals that end the drain, pods blocked by a PDB, pods evicted)."""
    view = kube.View(session.cluster)
    force = session.options.get("force")
    ignore_daemonsets = session.options.get("ignore-daemonsets")
    delete_emptydir = session.options.get("delete-emptydir-data") or session.options.get("delete-local-data")
    pod_selector = session.options.get("pod-selector")
    problems, blocked, evicted, bare = [], [], [], []
    daemon_pods, local_storage = [], []
    pdbs = list(view.items("PodDisruptionBudget"))
    for obj in list(view.items()):
        if obj.get("kind") not in ("Pod", "Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"):
            continue
        namespace = obj["metadata"].get("namespace", "default")
        # Placement as it was before the cordon that drain just set.
        for pod_name, labels, pod_spec, node, owner in view.workload_pods(obj, ignore_cordon_of=node_name):
            if node is None or node["metadata"]["name"] != node_name:
                continue
            if pod_selector and not all(labels.get(k) == v for k, v in (p.split("=", 1) for p in pod_selector.split(",") if "=" in p)):
                continue
            qualified = "%s/%s" % (namespace, pod_name)
            if obj["kind"] == "DaemonSet":
                daemon_pods.append(qualified)
                continue
            if any("emptyDir" in volume for volume in pod_spec.get("volumes") or []):
                local_storage.append(qualified)
            if obj["kind"] == "Pod" and not (obj["metadata"].get("ownerReferences")):
                bare.append((qualified, obj))
                continue
            if _violates_budget(view, pdbs, namespace, labels, node_name):
                blocked.append(qualified)
            else:
                evicted.append(qualified)
    if daemon_pods and not ignore_daemonsets:
        problems.append("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): " + ", ".join(daemon_pods))
    if local_storage and not delete_emptydir:
        problems.append("cannot delete Pods with local storage (use --delete-emptydir-data to override): " + ", ".join(local_storage))
    if bare and not force:
        problems.append("cannot delete Pods that declare no controller (use --force to override): " + ", ".join(q for q, _ in bare))
    if problems:
        return problems, [], []
    if bare:
        with session.cluster.locked():
            store = session.cluster.objects()
            for _, obj in bare:
                kube.delete_object(store, object_key(obj))
            session.cluster.save_objects(store)
        evicted.extend(qualified for qualified, _ in bare)
    return [], blocked, evicted


def _violates_budget(view, pdbs, namespace, labels, node_name):
    for pdb in pdbs:
        if pdb["metadata"].get("namespace") != namespace:
            continue
        spec = pdb.get("spec") or {}
        if not kube.labels_match(spec.get("selector") or {}, labels):
            continue
        healthy = expected = 0
        for obj in view.items(namespace=namespace):
            if obj.get("kind") not in ("Pod", "Deployment", "StatefulSet", "ReplicaSet"):
                continue
            for _, pod_labels, pod_spec, node, _ in view.workload_pods(obj, ignore_cordon_of=node_name):
                if kube.labels_match(spec.get("selector") or {}, pod_labels):
                    expected += 1
                    if view.pod_state(pod_spec, node)[0]:
                        healthy += 1
        allowed = _disruptions_allowed(spec, healthy, expected)
        if allowed < 1:
            return True
    return False


def _disruptions_allowed(spec, healthy, expected):
    def amount(value):
        if isinstance(value, str) and value.endswith("%"):
            return -(-int(value[:-1]) * expected // 100)
        return int(value)

    if "minAvailable" in spec:
        return healthy - amount(spec["minAvailable"])
    if "maxUnavailable" in spec:
        return amount(spec["maxUnavailable"]) - (expected - healthy)
    return healthy


def taint(session, args):
    if len(args) < 3 or args[0] not in ("node", "nodes", "no"):
        raise KubectlError("error: at least one taint update is required")
    name = args[1].split("/", 1)[-1]
    overwrite = session.options.get("overwrite")

    def change(node):
        taints = node.setdefault("spec", {}).setdefault("taints", [])
        for text in args[2:]:
            if text.endswith("-"):
                key_part = text[:-1]
                key, _, effect = key_part.partition(":")
                key = key.split("=", 1)[0]
                before = len(taints)
                taints[:] = [t for t in taints if not (t["key"] == key and (not effect or t["effect"] == effect))]
                if len(taints) == before:
                    raise KubectlError('error: taint "%s" not found' % key_part)
                continue
            key_value, _, effect = text.rpartition(":")
            if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise KubectlError('error: invalid taint spec: %s, unsupported taint effect "%s"' % (text, effect))
            key, _, value = key_value.partition("=")
            existing = [t for t in taints if t["key"] == key and t["effect"] == effect]
            if existing and not overwrite:
                raise KubectlError("error: node %s already has %s taint(s) with same effect(s) and --overwrite is false" % (name, key))
            taints[:] = [t for t in taints if not (t["key"] == key and t["effect"] == effect)]
            taint_entry = {"key": key, "effect": effect}
            if value:
                taint_entry["value"] = value
            taints.append(taint_entry)
        if not taints:
            node["spec"].pop("taints")
        return "node/%s %s" % (name, "untainted" if all(a.endswith("-") for a in args[2:]) else "tainted")

    print(_update_node(session, name, change))
    session.cluster.event("taint", node=name, taints=args[2:])
    return 0


def label(session, args):
    if len(args) < 3:
        raise KubectlError("error: one or more resources must be specified as <resource> <name>")
    kinds = kube.known_kinds(session.cluster.objects())
    kind = resolve_kind(args[0], kinds)
    name = args[1]
    session.require_write(kind.plural)
    overwrite = session.options.get("overwrite")
    with session.cluster.locked():
        store = session.cluster.objects()
        key = object_key({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": name, "namespace": session.namespace if kind.namespaced else None}})
        obj = store["items"].get(key)
        if obj is None:
            raise not_found(kind, name)
        labels = obj["metadata"].setdefault("labels", {})
        for text in args[2:]:
            if text.endswith("-"):
                labels.pop(text[:-1], None)
                continue
            key_, _, value = text.partition("=")
            if key_ in labels and labels[key_] != value and not overwrite:
                raise KubectlError("error: '%s' already has a value (%s), and --overwrite is false" % (key_, labels[key_]))
            labels[key_] = value
        session.cluster.save_objects(store)
    print("%s/%s labeled" % (kind.name_prefix, name))
    return 0


# wait and rollout


def wait(session, args):
    from .tokens import parse_duration

    condition = session.options.get("for") or ""
    timeout = parse_duration(session.options.get("timeout", "30s"))
    targets = parse_targets(session, args)
    deadline = time.monotonic() + timeout
    for kind, name in targets:
        while True:
            view = kube.View(session.cluster)
            try:
                objects = find_objects(session, kind, name, view)
            except KubectlError:
                if condition == "delete":
                    print("%s/%s condition met" % (kind.name_prefix, name))
                    break
                raise
            if condition.startswith("condition="):
                wanted = condition[len("condition=") :]
                expected = "True"
                if "=" in wanted:
                    wanted, expected = wanted.split("=", 1)
                met = all(
                    {c.get("type", "").lower(): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}.get(wanted.lower()) == expected
                    for obj in objects
                ) and objects
            elif condition == "delete":
                met = False
            else:
                raise KubectlError('error: unrecognized condition: "%s"' % condition)
            if met:
                for obj in objects:
                    print("%s/%s condition met" % (kind.name_prefix, obj["metadata"]["name"]))
                break
            if time.monotonic() >= deadline:
                raise KubectlError("error: timed out waiting for the condition on %s/%s" % (kind.plural, name or objects[0]["metadata"]["name"] if objects else name))
            time.sleep(0.5)
    return 0


def rollout(session, args):
    from .tokens import parse_duration

    if not args or args[0] != "status":
        raise KubectlError("error: the k0s test double supports only `rollout status`")
    targets = parse_targets(session, args[1:])
    timeout = parse_duration(session.options.get("timeout", "0s")) if session.options.get("timeout") else 300
    deadline = time.monotonic() + timeout
    for kind, name in targets:
        while True:
            view = kube.View(session.cluster)
            obj = find_objects(session, kind, name, view)[0]
            status = obj.get("status") or {}
            if kind.kind == "DaemonSet":
                done = status.get("numberReady", 0) >= status.get("desiredNumberScheduled", 0)
                text = 'daemon set "%s" successfully rolled out' % name
                pending = "Waiting for daemon set \"%s\" rollout to finish: %d of %d updated pods are available..." % (name, status.get("numberReady", 0), status.get("desiredNumberScheduled", 0))
            else:
                done = status.get("readyReplicas", 0) >= status.get("replicas", 0)
                text = '%s "%s" successfully rolled out' % ("deployment" if kind.kind == "Deployment" else "statefulset rolling update complete %d pods at revision" % status.get("replicas", 0), name)
                pending = 'Waiting for %s "%s" rollout to finish: %d of %d updated replicas are available...' % (kind.singular, name, status.get("readyReplicas", 0), status.get("replicas", 0))
            if done:
                print(text)
                break
            if time.monotonic() >= deadline:
                print(pending)
                raise KubectlError("error: timed out waiting for the condition")
            time.sleep(0.5)
    return 0


def version(session, args):
    record = session.cluster.any_api_record() or {}
    server = versions.kubernetes_version(record.get("version", session.host.version)) + "+k0s"
    print("Client Version: %s\nKustomize Version: v5.6.0\nServer Version: %s" % (versions.kubernetes_version(session.host.version) + "+k0s", server))
    return 0


COMMANDS = {
    "get": get,
    "apply": apply,
    "create": apply,
    "delete": delete,
    "cordon": cordon,
    "uncordon": uncordon,
    "drain": drain,
    "taint": taint,
    "label": label,
    "wait": wait,
    "rollout": rollout,
    "version": version,
}
