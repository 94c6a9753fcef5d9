"""k0s ClusterConfig: the default configuration, loading and validation.

Validation decodes strictly like k0s: unknown top-level fields, unknown fields under `spec` and
under the Helm extension blocks are errors. Deeper blocks accept any field, because rejecting a
field that real k0s accepts would fail a correct installer.
"""

import ipaddress

import yaml

from .errors import K0sError

try:
    Loader = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    Loader = yaml.SafeLoader

TOP_LEVEL_FIELDS = {"apiVersion", "kind", "metadata", "spec", "status"}
SPEC_FIELDS = {
    "api",
    "controllerManager",
    "scheduler",
    "extensions",
    "images",
    "installConfig",
    "konnectivity",
    "network",
    "podSecurityPolicy",
    "storage",
    "telemetry",
    "featureGates",
    "workerProfiles",
}
EXTENSIONS_FIELDS = {"helm", "storage"}
HELM_FIELDS = {"concurrencyLevel", "repositories", "charts"}
CHART_FIELDS = {"name", "chartname", "version", "values", "namespace", "timeout", "forceUpgrade", "order"}
REPOSITORY_FIELDS = {"name", "url", "insecure", "caFile", "certFile", "keyfile", "username", "password"}


def load_yaml(text):
    return yaml.load(text, Loader=Loader)


def load_all_yaml(text):
    return [document for document in yaml.load_all(text, Loader=Loader) if document is not None]


def dump_yaml(value):
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False)


def default_config(address="127.0.0.1", include_images=False, version=None):
    config = {
        "apiVersion": "k0s.k0sproject.io/v1beta1",
        "kind": "ClusterConfig",
        "metadata": {"name": "k0s", "namespace": "kube-system"},
        "spec": {
            "api": {"address": address, "k0sApiPort": 9443, "port": 6443, "sans": [address]},
            "controllerManager": {},
            "extensions": {"helm": {"concurrencyLevel": 5}},
            "installConfig": {"users": {"etcdUser": "etcd", "kineUser": "kube-apiserver", "konnectivityUser": "konnectivity-server", "kubeAPIserverUser": "kube-apiserver", "kubeSchedulerUser": "kube-scheduler"}},
            "konnectivity": {"adminPort": 8133, "agentPort": 8132},
            "network": {
                "clusterDomain": "cluster.local",
                "dualStack": {"enabled": False},
                "kubeProxy": {"iptables": {"minSyncPeriod": "0s", "syncPeriod": "0s"}, "mode": "iptables", "nftables": {"minSyncPeriod": "0s", "syncPeriod": "0s"}},
                "kuberouter": {"autoMTU": True, "hairpin": "Enabled", "metricsPort": 8080},
                "nodeLocalLoadBalancing": {"enabled": False, "envoyProxy": {"apiServerBindPort": 7443, "konnectivityServerBindPort": 7132}, "type": "EnvoyProxy"},
                "podCIDR": "10.244.0.0/16",
                "provider": "kuberouter",
                "serviceCIDR": "10.96.0.0/12",
            },
            "scheduler": {},
            "storage": {"etcd": {"peerAddress": address}, "type": "etcd"},
            "telemetry": {"enabled": True},
        },
    }
    if include_images and version:
        from . import versions

        config["spec"]["images"] = {"default_pull_policy": "IfNotPresent", "repository": "", "list": versions.system_images(version)}
    return config


def _unknown(fields, allowed):
    return sorted(set(fields) - allowed)


def validate(config):
    """Returns the list of validation errors of a parsed ClusterConfig (empty when valid)."""
    if not isinstance(config, dict):
        return ["configuration is not a mapping"]
    errors = []
    for field in _unknown(config, TOP_LEVEL_FIELDS):
        errors.append('json: unknown field "%s"' % field)
    if config.get("kind", "ClusterConfig") != "ClusterConfig":
        errors.append('kind: Invalid value: "%s": must be ClusterConfig' % config.get("kind"))
    if config.get("apiVersion", "k0s.k0sproject.io/v1beta1") != "k0s.k0sproject.io/v1beta1":
        errors.append('apiVersion: Invalid value: "%s": must be k0s.k0sproject.io/v1beta1' % config.get("apiVersion"))
    spec = config.get("spec") or {}
    if not isinstance(spec, dict):
        return errors + ["spec: must be a mapping"]
    for field in _unknown(spec, SPEC_FIELDS):
        errors.append('json: unknown field "%s"' % field)

    api = spec.get("api") or {}
    for field in ("address", "externalAddress"):
        value = api.get(field)
        if value and field == "address":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                errors.append('spec.api.address: Invalid value: "%s": invalid IP address' % value)
    storage = spec.get("storage") or {}
    if storage.get("type", "etcd") not in ("etcd", "kine"):
        errors.append('spec.storage.type: Unsupported value: "%s": supported values: "etcd", "kine"' % storage.get("type"))
    network = spec.get("network") or {}
    if network.get("provider", "kuberouter") not in ("kuberouter", "calico", "custom"):
        errors.append('spec.network.provider: Unsupported value: "%s": supported values: "calico", "custom", "kuberouter"' % network.get("provider"))

    extensions = spec.get("extensions") or {}
    for field in _unknown(extensions, EXTENSIONS_FIELDS):
        errors.append('json: unknown field "%s"' % field)
    helm = extensions.get("helm") or {}
    for field in _unknown(helm, HELM_FIELDS):
        errors.append('json: unknown field "%s"' % field)
    for repository in helm.get("repositories") or []:
        for field in _unknown(repository, REPOSITORY_FIELDS):
            errors.append('json: unknown field "%s"' % field)
        if not repository.get("name"):
            errors.append("repository must have Name field not empty")
        if not repository.get("url"):
            errors.append("repository must have URL field not empty")
    for chart in helm.get("charts") or []:
        for field in _unknown(chart, CHART_FIELDS):
            errors.append('json: unknown field "%s"' % field)
        if not chart.get("name"):
            errors.append("chart must have Name field not empty")
        if not chart.get("chartname"):
            errors.append("chart must have ChartName field not empty")
        if not chart.get("namespace"):
            errors.append("chart must have TargetNS field not empty")
        if len(chart.get("name") or "") > 53:
            errors.append("chart name %s is longer than 53 characters" % chart.get("name"))
    return errors


def parse_and_validate(text, source):
    """Parses and validates config text; raises K0sError as `k0s config validate` reports."""
    try:
        config = load_yaml(text)
    except yaml.YAMLError as error:
        raise K0sError("failed to parse configuration: %s: %s" % (source, " ".join(str(error).split())))
    if config is None:
        config = {}
    errors = validate(config)
    unknown = [error for error in errors if error.startswith("json: unknown field")]
    if unknown:
        # Go's strict decoder stops at the first unknown field.
        raise K0sError("failed to parse configuration: error unmarshaling JSON: while decoding JSON: " + unknown[0])
    if errors:
        raise K0sError("\n".join(errors))
    return config


def merged_with_defaults(config, address):
    """The effective ClusterConfig: defaults overlaid with the given configuration."""
    result = default_config(address)
    _merge(result, config or {})
    return result


def _merge(base, overlay):
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
