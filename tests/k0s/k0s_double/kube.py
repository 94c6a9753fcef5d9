"""The double's Kubernetes API: known kinds, the object store's apply and delete, and the status
of each object computed from the cluster's current state.

Statuses are computed when read rather than stored, so they follow the cluster at once: a node
is Ready only while its service heartbeats and after it imported every system image of its k0s
version, and a workload is ready only where the images it names were imported. The rules live in
STATUS_RULES, one function per kind; a custom resource without a rule gets no status.
"""

import copy
import hashlib

from .errors import KubectlError
from .host import now, rfc3339
from .store import new_uid, object_key
from . import versions

# (apiVersion, kind, plural, short names, namespaced)
BUILTIN_KINDS = [
    ("v1", "Namespace", "namespaces", ["ns"], False),
    ("v1", "Node", "nodes", ["no"], False),
    ("v1", "Pod", "pods", ["po"], True),
    ("v1", "Service", "services", ["svc"], True),
    ("v1", "ServiceAccount", "serviceaccounts", ["sa"], True),
    ("v1", "ConfigMap", "configmaps", ["cm"], True),
    ("v1", "Secret", "secrets", [], True),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims", ["pvc"], True),
    ("v1", "PersistentVolume", "persistentvolumes", ["pv"], False),
    ("v1", "Endpoints", "endpoints", ["ep"], True),
    ("v1", "Event", "events", ["ev"], True),
    ("v1", "LimitRange", "limitranges", ["limits"], True),
    ("v1", "ResourceQuota", "resourcequotas", ["quota"], True),
    ("apps/v1", "Deployment", "deployments", ["deploy"], True),
    ("apps/v1", "DaemonSet", "daemonsets", ["ds"], True),
    ("apps/v1", "StatefulSet", "statefulsets", ["sts"], True),
    ("apps/v1", "ReplicaSet", "replicasets", ["rs"], True),
    ("batch/v1", "Job", "jobs", [], True),
    ("batch/v1", "CronJob", "cronjobs", ["cj"], True),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", ["pdb"], True),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", [], True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", [], True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", [], False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", [], False),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", ["crd", "crds"], False),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", ["netpol"], True),
    ("networking.k8s.io/v1", "Ingress", "ingresses", ["ing"], True),
    ("networking.k8s.io/v1", "IngressClass", "ingressclasses", [], False),
    ("storage.k8s.io/v1", "StorageClass", "storageclasses", ["sc"], False),
    ("storage.k8s.io/v1", "CSIDriver", "csidrivers", [], False),
    ("scheduling.k8s.io/v1", "PriorityClass", "priorityclasses", ["pc"], False),
    ("node.k8s.io/v1", "RuntimeClass", "runtimeclasses", [], False),
    ("coordination.k8s.io/v1", "Lease", "leases", [], True),
    ("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", [], True),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", ["hpa"], True),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", [], False),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", [], False),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", [], False),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", [], False),
    ("apiregistration.k8s.io/v1", "APIService", "apiservices", [], False),
    # CRDs that k0s itself installs.
    ("helm.k0sproject.io/v1beta1", "Chart", "charts", [], True),
    ("k0s.k0sproject.io/v1beta1", "ClusterConfig", "clusterconfigs", [], True),
    ("autopilot.k0sproject.io/v1beta2", "Plan", "plans", [], False),
]

SYSTEM_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"]
HOST_ANNOTATION = "k0s-double.airlock.test/host"
STACK_LABEL = "k0s.k0sproject.io/stack"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def group_of(api_version):
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


class Kind:
    def __init__(self, api_version, kind, plural, short_names, namespaced):
        self.api_version = api_version
        self.group = group_of(api_version)
        self.kind = kind
        self.plural = plural
        self.singular = kind.lower()
        self.short_names = short_names
        self.namespaced = namespaced

    @property
    def resource(self):
        """kubectl's name for the resource type: `deployments.apps`, `nodes`."""
        return self.plural + ("." + self.group if self.group else "")

    @property
    def name_prefix(self):
        """kubectl's `-o name` prefix: `deployment.apps`, `node`."""
        return self.singular + ("." + self.group if self.group else "")


def known_kinds(store):
    """Built-in kinds plus the kinds of every CustomResourceDefinition in the store."""
    kinds = [Kind(*row) for row in BUILTIN_KINDS]
    for obj in store["items"].values():
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or [{"name": spec.get("version", "v1")}]:
            kinds.append(
                Kind(
                    "%s/%s" % (spec.get("group", ""), version.get("name")),
                    names.get("kind", ""),
                    names.get("plural", names.get("kind", "").lower() + "s"),
                    names.get("shortNames") or [],
                    spec.get("scope", "Namespaced") == "Namespaced",
                )
            )
    return kinds


def kind_for_object(obj, kinds):
    for kind in kinds:
        if kind.kind == obj.get("kind") and kind.api_version == obj.get("apiVersion"):
            return kind
    return None


def resolve_resource(text, kinds):
    """Finds the kind that kubectl's resource argument names: `deploy`, `deployments.apps`, `Node`."""
    name, _, group = text.partition(".")
    name = name.lower()
    for kind in kinds:
        if group and kind.group != group:
            continue
        if name in (kind.plural, kind.singular, kind.kind.lower()) or name in kind.short_names:
            return kind
    return None


# Image references.


def normalize_image(reference):
    """Splits an image reference into (repository, tag, digest) the way containerd names images:
    `nginx` is docker.io/library/nginx:latest."""
    name, _, digest = reference.partition("@")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + name
        if "/" not in name[len("docker.io/") :]:
            name = "docker.io/library/" + name[len("docker.io/") :]
    if tag is None and not digest:
        tag = "latest"
    return name, tag, digest or None


def image_present(reference, imported):
    """Whether `reference` names one of the imported images, given as [{name, digest}]."""
    repository, tag, digest = normalize_image(reference)
    for image in imported:
        other_repository, other_tag, _ = normalize_image(image["name"])
        if other_repository != repository:
            continue
        if digest:
            if image.get("digest") == digest:
                return True
        elif other_tag == tag:
            return True
    return False


def pod_images(pod_spec):
    images = []
    for section in ("initContainers", "containers"):
        for container in pod_spec.get(section) or []:
            if container.get("image"):
                images.append(container["image"])
    return images


# Selection and scheduling.


def labels_match(selector, labels):
    """Matches a LabelSelector ({matchLabels, matchExpressions}) or a plain map."""
    if not selector:
        return True
    labels = labels or {}
    match_labels = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if not isinstance(match_labels, dict):
        return False
    for key, value in match_labels.items():
        if key == "matchExpressions":
            continue
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def tolerates(tolerations, taint):
    for toleration in tolerations or []:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration.get("key") == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def pod_template(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return {"metadata": obj.get("metadata") or {}, "spec": spec}
    if obj.get("kind") == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    return spec.get("template") or {}


class View:
    """A snapshot of the cluster for computing statuses."""

    def __init__(self, cluster, store=None):
        self.cluster = cluster
        self.store = store if store is not None else cluster.objects()
        self.records = cluster.host_records()
        self.info = cluster.info() or {}
        self.time = now()

    def items(self, kind=None, namespace=None):
        for obj in self.store["items"].values():
            if kind and obj.get("kind") != kind:
                continue
            if namespace is not None and (obj.get("metadata") or {}).get("namespace") != namespace:
                continue
            yield obj

    def nodes(self):
        return sorted(self.items("Node"), key=lambda node: node["metadata"]["name"])

    def node_record(self, node):
        host = (node["metadata"].get("annotations") or {}).get(HOST_ANNOTATION)
        return self.records.get(host) if host else None

    def record_fresh(self, record):
        if not record or record.get("stopped") or record.get("failed"):
            return False
        return self.time - record.get("heartbeat", 0) <= self.cluster.host.heartbeat_timeout

    def node_condition(self, node):
        """(status, reason, message) of the node's Ready condition."""
        record = self.node_record(node)
        if not record or not record.get("workloads"):
            return "Unknown", "NodeStatusUnknown", "Kubelet never posted node status."
        if not self.record_fresh(record):
            return "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
        required = versions.system_images(record["version"], self.info.get("clusterConfig"))
        missing = [image for image in required if not image_present(image, record.get("images", []))]
        if missing:
            return (
                "False",
                "KubeletNotReady",
                "container runtime is missing k0s system images (import the k0s airgap bundle of %s into %s/images): %s"
                % (record["version"], record.get("dataDir", "/var/lib/k0s"), ", ".join(missing)),
            )
        return "True", "KubeletReady", "kubelet is posting ready status"

    def node_ready(self, node):
        return self.node_condition(node)[0] == "True"

    def node_images(self, node):
        record = self.node_record(node)
        return (record or {}).get("images", [])

    def schedulable_nodes(self, pod_spec, ignore_cordon_of=None, daemon=False):
        """Nodes a pod with this spec may run on. DaemonSet pods ignore cordons, as in Kubernetes."""
        nodes = []
        for node in self.nodes():
            name = node["metadata"]["name"]
            spec = node.get("spec") or {}
            if pod_spec.get("nodeName") and pod_spec["nodeName"] != name:
                continue
            if spec.get("unschedulable") and not daemon and name != ignore_cordon_of:
                continue
            if not labels_match(pod_spec.get("nodeSelector"), node["metadata"].get("labels")):
                continue
            taints = [t for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
            if any(not tolerates(pod_spec.get("tolerations"), taint) for taint in taints):
                continue
            nodes.append(node)
        return nodes

    def pod_state(self, pod_spec, node):
        """(ready, reason, message) of a pod with this spec on `node` (None: not scheduled)."""
        if node is None:
            return False, "Unschedulable", "0/%d nodes are available to schedule the pod" % len(self.nodes())
        name = node["metadata"]["name"]
        if not self.node_ready(node):
            return False, "NodeNotReady", "node %s is not Ready" % name
        for image in pod_images(pod_spec):
            if not image_present(image, self.node_images(node)):
                return (
                    False,
                    "ErrImageNeverPull",
                    'image "%s" is not present on node %s: no image bundle imported there contains it' % (image, name),
                )
        return True, "Running", ""

    def workload_pods(self, obj, ignore_cordon_of=None):
        """The pods a workload runs, placed round-robin on the nodes that may run them."""
        kind = obj.get("kind")
        metadata = obj["metadata"]
        template = pod_template(obj)
        pod_spec = template.get("spec") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        owner = {"apiVersion": obj["apiVersion"], "kind": kind, "name": metadata["name"], "uid": metadata.get("uid")}
        pods = []
        if kind == "Pod":
            node_name = pod_spec.get("nodeName")
            nodes = self.schedulable_nodes(pod_spec, ignore_cordon_of)
            node = next((n for n in self.nodes() if n["metadata"]["name"] == node_name), None) if node_name else (nodes[0] if nodes else None)
            return [(metadata["name"], labels or metadata.get("labels") or {}, pod_spec, node, None)]
        if kind == "DaemonSet":
            for node in self.schedulable_nodes(pod_spec, daemon=True):
                suffix = hashlib.sha256(node["metadata"]["name"].encode()).hexdigest()[:5]
                pods.append(("%s-%s" % (metadata["name"], suffix), labels, pod_spec, node, owner))
            return pods
        if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            replicas = (obj.get("spec") or {}).get("replicas", 1)
        elif kind == "Job":
            replicas = 1
        else:
            return []
        nodes = self.schedulable_nodes(pod_spec, ignore_cordon_of)
        template_hash = hashlib.sha256(repr(sorted(pod_spec.items())).encode()).hexdigest()[:10]
        for index in range(replicas):
            if kind == "StatefulSet":
                name = "%s-%d" % (metadata["name"], index)
            else:
                name = "%s-%s-%s" % (metadata["name"], template_hash, hashlib.sha256(b"%d" % index).hexdigest()[:5])
            node = nodes[index % len(nodes)] if nodes else None
            pods.append((name, labels, pod_spec, node, owner))
        return pods

    def pod_objects(self, namespace=None):
        """Every pod of the cluster as a Pod object: standalone Pods and those of workloads."""
        pods = []
        for obj in self.store["items"].values():
            if obj.get("kind") not in ("Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
                continue
            obj_namespace = obj["metadata"].get("namespace")
            if namespace is not None and obj_namespace != namespace:
                continue
            for name, labels, pod_spec, node, owner in self.workload_pods(obj):
                ready, reason, message = self.pod_state(pod_spec, node)
                pods.append(self.pod_object(obj, name, obj_namespace, labels, pod_spec, node, owner, ready, reason, message))
        return pods

    def pod_object(self, source, name, namespace, labels, pod_spec, node, owner, ready, reason, message):
        if source.get("kind") == "Pod":
            pod = copy.deepcopy(source)
        else:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                    "uid": hashlib.sha256(("%s/%s" % (namespace, name)).encode()).hexdigest()[:32],
                    "creationTimestamp": source["metadata"].get("creationTimestamp"),
                    "ownerReferences": [owner] if owner else [],
                },
                "spec": copy.deepcopy(pod_spec),
            }
        if node is not None:
            pod["spec"]["nodeName"] = node["metadata"]["name"]
        completed = source.get("kind") == "Job" and ready
        phase = "Succeeded" if completed else ("Running" if ready else "Pending")
        waiting = {} if ready else {"waiting": {"reason": reason, "message": message}}
        pod["status"] = {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True" if node is not None else "False"},
                {"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message},
            ],
            "containerStatuses": [
                {
                    "name": container.get("name", ""),
                    "image": container.get("image", ""),
                    "ready": ready,
                    "state": {"running": {}} if ready else waiting,
                }
                for container in pod_spec.get("containers") or []
            ],
        }
        return pod

    def status_of(self, obj):
        rule = STATUS_RULES.get((group_of(obj.get("apiVersion", "")), obj.get("kind")))
        if rule is None:
            return obj.get("status")
        return rule(obj, self)

    def with_status(self, obj):
        result = copy.deepcopy(obj)
        status = self.status_of(obj)
        if status is not None:
            result["status"] = status
        else:
            result.pop("status", None)
        return result


# Status rules.


def _condition(kind, ready, reason, message):
    return {"type": kind, "status": "True" if ready else "False", "reason": reason, "message": message, "lastUpdateTime": rfc3339()}


def _first_problem(view, pods):
    for name, _, pod_spec, node, _ in pods:
        ready, reason, message = view.pod_state(pod_spec, node)
        if not ready:
            return "pod %s: %s: %s" % (name, reason, message)
    return ""


def _replicated_status(obj, view):
    pods = view.workload_pods(obj)
    ready = sum(1 for _, _, spec, node, _ in pods if view.pod_state(spec, node)[0])
    replicas = len(pods)
    problem = _first_problem(view, pods)
    return pods, ready, replicas, problem


def deployment_status(obj, view):
    pods, ready, replicas, problem = _replicated_status(obj, view)
    available = ready >= replicas
    return {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": replicas - ready,
        "conditions": [
            _condition(
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability." if available else "Deployment does not have minimum availability: " + problem,
            ),
            _condition("Progressing", True, "NewReplicaSetAvailable", ""),
        ],
    }


def statefulset_status(obj, view):
    pods, ready, replicas, problem = _replicated_status(obj, view)
    status = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": replicas,
        "updatedReplicas": replicas,
    }
    if problem:
        status["conditions"] = [_condition("Ready", False, "PodsNotReady", problem)]
    return status


def daemonset_status(obj, view):
    pods, ready, desired, problem = _replicated_status(obj, view)
    status = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "updatedNumberScheduled": desired,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": desired - ready,
        "numberMisscheduled": 0,
    }
    if problem:
        status["conditions"] = [_condition("Ready", False, "PodsNotReady", problem)]
    return status


def job_status(obj, view):
    pods, ready, _, problem = _replicated_status(obj, view)
    if ready:
        return {"succeeded": 1, "conditions": [_condition("Complete", True, "Completed", "")]}
    return {"active": 1, "conditions": [_condition("Complete", False, "PodsNotReady", problem)]}


def pod_status(obj, view):
    pod = view.pod_objects(obj["metadata"].get("namespace"))
    for candidate in pod:
        if candidate["metadata"]["name"] == obj["metadata"]["name"]:
            return candidate["status"]
    return None


def node_status(obj, view):
    record = view.node_record(obj) or {}
    status, reason, message = view.node_condition(obj)
    version = record.get("version", "")
    components = versions.components(version) if version else {}
    name = obj["metadata"]["name"]
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": rfc3339(record.get("heartbeat", view.time)),
                "lastTransitionTime": rfc3339(record.get("started", view.time)),
            }
        ],
        "addresses": [
            {"type": "InternalIP", "address": record.get("nodeIP") or record.get("address", "")},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "kubeletVersion": versions.kubernetes_version(version) + "+k0s" if version else "",
            "kubeProxyVersion": versions.kubernetes_version(version) + "+k0s" if version else "",
            "containerRuntimeVersion": "containerd://" + components.get("containerd", "").lstrip("v"),
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "Debian GNU/Linux 12 (bookworm)",
        },
        "images": [{"names": [image["name"], image["name"].split(":")[0] + "@" + image["digest"]], "sizeBytes": 1024} for image in record.get("images", [])],
    }


def _deployment_available(view, name, namespace=None):
    """(available, problem) of the Deployment `name`, in `namespace` or in any namespace."""
    for item in view.items("Deployment", namespace):
        if item["metadata"]["name"] != name:
            continue
        status = view.status_of(item) or {}
        for condition in status.get("conditions", []):
            if condition.get("type") == "Available":
                return condition.get("status") == "True", condition.get("message", "")
        return False, "Deployment %s has no Available condition" % name
    return False, "Deployment %s does not exist" % name


def kubevirt_status(obj, view):
    """A KubeVirt CR is Available once virt-operator is available and the components it deploys
    can run: virt-api and virt-controller on some node, virt-handler (with virt-launcher) on every
    node that runs workloads. Their images come from spec.imageRegistry and spec.imageTag."""
    namespace = obj["metadata"].get("namespace")
    spec = obj.get("spec") or {}
    operator_ready, problem = _deployment_available(view, "virt-operator", namespace)
    registry = spec.get("imageRegistry") or "quay.io/kubevirt"
    tag = spec.get("imageTag") or ""
    if operator_ready and not tag:
        operator_ready, problem = False, "spec.imageTag is empty"
    if operator_ready:
        image = lambda name: "%s/%s:%s" % (registry, name, tag)
        control = {"containers": [{"name": "virt-api", "image": image("virt-api")}, {"name": "virt-controller", "image": image("virt-controller")}]}
        handler = {"containers": [{"name": "virt-handler", "image": image("virt-handler")}, {"name": "virt-launcher", "image": image("virt-launcher")}]}
        nodes = [node for node in view.schedulable_nodes(handler, daemon=True) if view.node_ready(node)]
        if not nodes:
            operator_ready, problem = False, "no Ready node can run virt-handler"
        for node in nodes:
            ready, _, message = view.pod_state(handler, node)
            if not ready:
                operator_ready, problem = False, "virt-handler: " + message
                break
        if operator_ready and not any(view.pod_state(control, node)[0] for node in nodes):
            operator_ready, problem = False, "virt-api and virt-controller: " + view.pod_state(control, nodes[0])[2]
    return {
        "phase": "Deployed" if operator_ready else "Deploying",
        "observedKubeVirtRegistry": registry,
        "observedKubeVirtVersion": tag,
        "conditions": [
            _condition("Available", operator_ready, "AllComponentsReady" if operator_ready else "DeploymentInProgress", "All components are ready." if operator_ready else problem),
            _condition("Progressing", not operator_ready, "", ""),
            _condition("Degraded", False, "", ""),
        ],
    }


def clusterpolicy_status(obj, view):
    """The GPU Operator's ClusterPolicy is `ready` once the gpu-operator Deployment is available;
    the operand DaemonSets are checked on their own by the installer's readiness checks."""
    ready, problem = _deployment_available(view, "gpu-operator")
    status = {"state": "ready" if ready else "notReady", "namespace": "gpu-operator"}
    if not ready:
        status["conditions"] = [_condition("Ready", False, "OperandNotReady", problem)]
    return status


# (API group, kind) -> function(object, View) returning the object's status. Add a rule here to
# give a custom resource a status.
def namespace_status(obj, view):
    return {"phase": "Terminating" if obj["metadata"].get("deletionTimestamp") else "Active"}


STATUS_RULES = {
    ("", "Namespace"): namespace_status,
    ("kubevirt.io", "KubeVirt"): kubevirt_status,
    ("nvidia.com", "ClusterPolicy"): clusterpolicy_status,
    ("", "Node"): node_status,
    ("", "Pod"): pod_status,
    ("apps", "Deployment"): deployment_status,
    ("apps", "StatefulSet"): statefulset_status,
    ("apps", "DaemonSet"): daemonset_status,
    ("apps", "ReplicaSet"): statefulset_status,
    ("batch", "Job"): job_status,
}


def ready_condition(obj, view):
    """Whether an object counts as ready for `kubectl wait --for=condition=<type>` and rollout status."""
    status = view.status_of(obj) or {}
    return {condition.get("type"): condition.get("status") for condition in status.get("conditions") or []}


# Writing objects.


class ApplyResult:
    def __init__(self, kind, obj, action):
        self.kind = kind
        self.obj = obj
        self.action = action  # created, configured, unchanged


def _comparable(obj):
    trimmed = copy.deepcopy(obj)
    metadata = trimmed.get("metadata") or {}
    for field in ("uid", "creationTimestamp", "resourceVersion", "generation", "managedFields"):
        metadata.pop(field, None)
    trimmed.pop("status", None)
    return trimmed


def apply_object(store, obj, kinds, default_namespace="default", source="STDIN", keep_status=False):
    """Creates or updates `obj` in `store`; raises KubectlError with kubectl's wording."""
    if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
        raise KubectlError('error: error validating "%s": error validating data: apiVersion or kind not set' % source)
    metadata = obj.setdefault("metadata", {}) or {}
    obj["metadata"] = metadata
    name = metadata.get("name")
    kind = kind_for_object(obj, kinds)
    if kind is None:
        raise KubectlError(
            'error: resource mapping not found for name: "%s" namespace: "%s" from "%s": no matches for kind "%s" in version "%s"\n'
            "ensure CRDs are installed first" % (name or "", metadata.get("namespace", ""), source, obj["kind"], obj["apiVersion"])
        )
    if not name:
        raise KubectlError('error: error when retrieving current configuration of "%s": resource name may not be empty' % source)
    if kind.namespaced:
        metadata["namespace"] = metadata.get("namespace") or default_namespace
        namespace_key = object_key({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": metadata["namespace"]}})
        if namespace_key not in store["items"]:
            raise KubectlError(
                'Error from server (NotFound): error when creating "%s": namespaces "%s" not found' % (source, metadata["namespace"])
            )
    else:
        metadata.pop("namespace", None)
    key = object_key(obj)
    existing = store["items"].get(key)
    store["resourceVersion"] = store.get("resourceVersion", 0) + 1
    if existing is not None:
        if _comparable(existing) == _comparable(obj):
            return ApplyResult(kind, existing, "unchanged")
        metadata["uid"] = existing["metadata"].get("uid")
        metadata["creationTimestamp"] = existing["metadata"].get("creationTimestamp")
        metadata["generation"] = existing["metadata"].get("generation", 1) + 1
        action = "configured"
    else:
        metadata["uid"] = new_uid()
        metadata["creationTimestamp"] = rfc3339()
        metadata["generation"] = 1
        action = "created"
    metadata["resourceVersion"] = str(store["resourceVersion"])
    if keep_status and existing is not None and "status" in existing and "status" not in obj:
        obj["status"] = existing["status"]
    elif not keep_status:
        obj.pop("status", None)
        if existing is not None and existing.get("kind") in ("Chart",) and "status" in existing:
            obj["status"] = existing["status"]
    store["items"][key] = obj
    return ApplyResult(kind, obj, action)


def delete_object(store, key):
    """Deletes an object and what depends on it: a namespace's objects, a CRD's custom resources."""
    obj = store["items"].pop(key, None)
    if obj is None:
        return None
    if obj.get("kind") == "Namespace":
        name = obj["metadata"]["name"]
        for other in [k for k, o in store["items"].items() if (o.get("metadata") or {}).get("namespace") == name]:
            store["items"].pop(other)
    if obj.get("kind") == "CustomResourceDefinition":
        spec = obj.get("spec") or {}
        kind_name = (spec.get("names") or {}).get("kind")
        group = spec.get("group")
        for other in [k for k, o in store["items"].items() if o.get("kind") == kind_name and group_of(o.get("apiVersion", "")) == group]:
            store["items"].pop(other)
    store["resourceVersion"] = store.get("resourceVersion", 0) + 1
    return obj


def system_objects(version):
    """The kube-system workloads k0s deploys itself, with the images of its version."""
    parts = versions.components(version)
    registry = versions.REGISTRY
    tolerate_all = [{"operator": "Exists"}]

    def daemonset(name, images):
        return {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {STACK_LABEL: "k0s-system"}},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": name}},
                "template": {
                    "metadata": {"labels": {"k8s-app": name}},
                    "spec": {"tolerations": tolerate_all, "containers": [{"name": name, "image": image} for image in images]},
                },
            },
        }

    def deployment(name, image):
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {STACK_LABEL: "k0s-system"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"k8s-app": name}},
                "template": {"metadata": {"labels": {"k8s-app": name}}, "spec": {"containers": [{"name": name, "image": image}]}},
            },
        }

    return [
        daemonset("kube-proxy", [registry + "kube-proxy:" + versions.kubernetes_version(version)]),
        daemonset("kube-router", [registry + "cni-node:" + parts["cni-node"], registry + "kube-router:" + parts["kube-router"]]),
        daemonset("konnectivity-agent", [registry + "apiserver-network-proxy-agent:" + parts["konnectivity"]]),
        deployment("coredns", registry + "coredns:" + parts["coredns"]),
        deployment("metrics-server", registry + "metrics-server:" + parts["metrics-server"]),
    ]


def namespace_object(name):
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}
