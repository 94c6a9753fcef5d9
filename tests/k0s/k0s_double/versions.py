"""Component versions and system images per k0s version.

The numbers are plausible stand-ins, not copied from k0s releases: what matters to the tests is
that each k0s minor version has its own image set, so an upgrade needs the new image bundle.
A version without its own row (such as a generated v1.37.0+k0s.0) takes the row of the highest
known minor below it, or the lowest known one.
"""

import re

from .errors import K0sError

COMPONENTS = {
    "1.35": {
        "runc": "v1.3.3",
        "containerd": "v2.1.4",
        "etcd": "v3.6.5",
        "kine": "v0.14.2",
        "konnectivity": "v0.33.0",
        "coredns": "1.13.1",
        "metrics-server": "v0.8.0-0",
        "pause": "3.10.1",
        "kube-router": "v2.6.1-iptables1.8.11-0",
        "cni-node": "1.8.0-k0s.0",
        "calico": "v3.30.3-0",
        "envoy": "v1.35.3",
        "pushgateway": "1.5.0-k0s.0",
    },
    "1.36": {
        "runc": "v1.3.4",
        "containerd": "v2.2.0",
        "etcd": "v3.6.6",
        "kine": "v0.14.5",
        "konnectivity": "v0.34.0",
        "coredns": "1.13.2",
        "metrics-server": "v0.8.1-0",
        "pause": "3.10.1",
        "kube-router": "v2.6.2-iptables1.8.11-0",
        "cni-node": "1.8.1-k0s.0",
        "calico": "v3.31.0-0",
        "envoy": "v1.36.2",
        "pushgateway": "1.5.1-k0s.0",
    },
}

VERSION_PATTERN = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(-[0-9A-Za-z.-]+)?(\+k0s\.(\d+))?$")
REGISTRY = "quay.io/k0sproject/"


def parse(version):
    match = VERSION_PATTERN.match(version or "")
    if not match:
        raise K0sError("invalid k0s version %r" % version)
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def kubernetes_version(version):
    """v1.35.3+k0s.0 -> v1.35.3"""
    return "v" + version.lstrip("v").split("+", 1)[0]


def components(version):
    major, minor, _ = parse(version)
    key = "%d.%d" % (major, minor)
    if key in COMPONENTS:
        return COMPONENTS[key]
    known = sorted(COMPONENTS, key=lambda k: tuple(int(part) for part in k.split(".")))
    below = [k for k in known if tuple(int(p) for p in k.split(".")) < (major, minor)]
    return COMPONENTS[below[-1] if below else known[0]]


def version_table(version):
    parts = components(version)
    return [
        ("k0s", version),
        ("runc", parts["runc"]),
        ("containerd", parts["containerd"]),
        ("kubernetes", kubernetes_version(version)),
        ("kine", parts["kine"]),
        ("etcd", parts["etcd"]),
        ("konnectivity", parts["konnectivity"]),
    ]


def system_images(version, cluster_config=None, include_all=False):
    """The images `k0s airgap list-images` prints for a version and a ClusterConfig."""
    parts = components(version)
    spec = (cluster_config or {}).get("spec") or {}
    network = spec.get("network") or {}
    provider = network.get("provider") or "kuberouter"
    calico = [
        REGISTRY + "calico-cni:" + parts["calico"],
        REGISTRY + "calico-node:" + parts["calico"],
        REGISTRY + "calico-kube-controllers:" + parts["calico"],
    ]
    kube_router = [REGISTRY + "cni-node:" + parts["cni-node"], REGISTRY + "kube-router:" + parts["kube-router"]]
    images = [
        REGISTRY + "apiserver-network-proxy-agent:" + parts["konnectivity"],
        REGISTRY + "coredns:" + parts["coredns"],
        REGISTRY + "kube-proxy:" + kubernetes_version(version),
        REGISTRY + "metrics-server:" + parts["metrics-server"],
        REGISTRY + "pause:" + parts["pause"],
    ]
    if include_all:
        images += calico + kube_router
        images += [REGISTRY + "envoy-distroless:" + parts["envoy"], REGISTRY + "pushgateway-ttl:" + parts["pushgateway"]]
    elif provider == "calico":
        images += calico
    elif provider == "kuberouter":
        images += kube_router
    return sorted(set(images))
