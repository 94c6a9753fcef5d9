"""What a running controller applies on its own: the manifest deployer (every direct
subdirectory of `<data-dir>/manifests/` is a stack of `*.yaml` files) and the Helm extension
(`helm.k0sproject.io/v1beta1` Chart objects whose `chartName` is a local `.tgz`).

A chart installs only when its archive exists on every controller of the cluster; if one lacks
it, the Chart's status.error reads `can't locate chart: path not found: <path>`, as k0s reports
on the controller that runs the install.
"""

import hashlib
import os

import yaml

from . import helm, kube
from .config import load_all_yaml, load_yaml
from .errors import KubectlError
from .host import rfc3339

CHART_KEY_ANNOTATION = "k0s-double.airlock.test/chart"


def apply_stacks(service):
    root = service.file(service.data_dir + "/manifests")
    seen = set()
    if os.path.isdir(root):
        for stack in sorted(os.listdir(root)):
            directory = os.path.join(root, stack)
            if not os.path.isdir(directory):
                continue
            seen.add(stack)
            # Only *.yaml files directly inside, as k0s reads them; .yml and subfolders are ignored.
            files = sorted(name for name in os.listdir(directory) if name.endswith(".yaml") and os.path.isfile(os.path.join(directory, name)))
            texts = []
            for name in files:
                with open(os.path.join(directory, name), "rb") as file:
                    texts.append((name, file.read()))
            digest = hashlib.sha256(repr(texts).encode()).hexdigest()
            if service.stack_hashes.get(stack) == digest:
                continue
            error = _apply_stack(service, stack, texts)
            service.stack_reports[stack] = {"files": files, "error": error, "applied": rfc3339()}
            if error:
                service.log("error", "stack %s: %s" % (stack, error))
            else:
                service.stack_hashes[stack] = digest
    for stack in list(service.stack_hashes):
        if stack not in seen:
            _apply_stack(service, stack, [])
            service.stack_hashes.pop(stack)
            service.stack_reports.pop(stack, None)


def _sorted_for_apply(objects):
    """Namespaces and CRDs first, as the k0s applier does, so a stack may define both."""
    order = {"Namespace": 0, "CustomResourceDefinition": 1}
    return sorted(objects, key=lambda obj: order.get(obj.get("kind"), 2))


def _apply_stack(service, stack, texts):
    objects = []
    for name, text in texts:
        try:
            objects.extend(doc for doc in load_all_yaml(text.decode("utf-8", "replace")) if isinstance(doc, dict))
        except yaml.YAMLError as error:
            return "%s: invalid YAML: %s" % (name, " ".join(str(error).split()))
    errors = []
    with service.cluster.locked():
        store = service.cluster.objects()
        wanted = set()
        for obj in _sorted_for_apply(objects):
            obj.setdefault("metadata", {}).setdefault("labels", {})[kube.STACK_LABEL] = stack
            kinds = kube.known_kinds(store)
            kind = kube.kind_for_object(obj, kinds)
            if kind is not None and kind.namespaced and not obj["metadata"].get("namespace"):
                errors.append("%s %s has no namespace; manifests must name their namespace" % (obj.get("kind"), obj["metadata"].get("name")))
                continue
            try:
                result = kube.apply_object(store, obj, kinds, source=stack)
                wanted.add(kube.object_key(result.obj))
            except KubectlError as error:
                errors.append(str(error))
        for key, obj in list(store["items"].items()):
            labels = obj.get("metadata", {}).get("labels") or {}
            if labels.get(kube.STACK_LABEL) == stack and key not in wanted and not errors:
                kube.delete_object(store, key)
        service.cluster.save_objects(store)
    return "; ".join(errors) or None


def _chart_objects(store):
    return [obj for obj in store["items"].values() if obj.get("kind") == "Chart" and obj.get("apiVersion", "").startswith("helm.k0sproject.io/")]


def _is_local_path(name):
    return name.startswith("/") or name.startswith(".")


def reconcile_charts(service):
    store = service.cluster.objects()
    charts = _chart_objects(store)

    # This controller's view: does it have each chart archive?
    reports = {}
    for chart in charts:
        path = (chart.get("spec") or {}).get("chartName", "")
        key = kube.object_key(chart)
        if _is_local_path(path):
            local = service.file(path)
            found = os.path.isfile(local)
            digest = None
            if found:
                with open(local, "rb") as file:
                    digest = hashlib.sha256(file.read()).hexdigest()
            reports[key] = {"path": path, "found": found, "sha256": digest}
        else:
            reports[key] = {"path": path, "found": False, "remote": True}
    service.chart_reports = reports
    service.heartbeat()

    members = sorted(service.cluster.etcd_members())
    records = service.cluster.host_records()
    for chart in charts:
        key = kube.object_key(chart)
        spec = chart.get("spec") or {}
        path = spec.get("chartName", "")
        status = dict(chart.get("status") or {})
        if not _is_local_path(path):
            error = "failed to download chart %s: the k0s test double installs only local chart archives (.tgz paths)" % path
            _set_chart_status(service, key, status, error=error)
            continue
        missing = []
        waiting = False
        for member in members:
            report = ((records.get(member) or {}).get("charts") or {}).get(key)
            if report is None or report.get("path") != path:
                waiting = True
            elif not report.get("found"):
                missing.append(member)
        if missing:
            _set_chart_status(service, key, status, error="can't locate chart: path not found: %s" % path, missing_on=missing)
            continue
        if waiting or not reports[key]["found"]:
            continue
        values_text = spec.get("values") or ""
        expected = hashlib.sha256((reports[key]["sha256"] + values_text + spec.get("namespace", "")).encode()).hexdigest()
        if status.get("valuesHash") == expected and not status.get("error"):
            continue
        _install_chart(service, chart, key, expected)

    _remove_orphaned_releases(service)


def _set_chart_status(service, key, status, error, missing_on=None):
    if status.get("error") == error:
        return
    with service.cluster.locked():
        store = service.cluster.objects()
        chart = store["items"].get(key)
        if chart is None:
            return
        new_status = dict(chart.get("status") or {})
        new_status.update({"releaseName": chart["spec"].get("releaseName"), "error": error, "updated": rfc3339()})
        if missing_on:
            new_status["missingOn"] = missing_on
        chart["status"] = new_status
        service.cluster.save_objects(store)
    service.log("error", "chart %s: %s" % (key, error))


def _install_chart(service, chart, key, expected_hash):
    spec = chart["spec"]
    release = spec.get("releaseName") or chart["metadata"]["name"]
    namespace = spec.get("namespace") or "default"
    try:
        values = load_yaml(spec.get("values") or "") or {}
        if not isinstance(values, dict):
            raise helm.ChartError("values of chart %s are not a YAML mapping" % release)
        meta, objects = helm.render(service.file(spec["chartName"]), release, namespace, values)
    except (helm.ChartError, yaml.YAMLError) as error:
        _set_chart_status(service, key, dict(chart.get("status") or {}), error=str(error))
        return
    errors = []
    with service.cluster.locked():
        store = service.cluster.objects()
        current = store["items"].get(key)
        if current is None:
            return
        kinds = kube.known_kinds(store)
        # helm install --create-namespace
        if "/Namespace//" + namespace not in store["items"]:
            kube.apply_object(store, kube.namespace_object(namespace), kinds)
        wanted = set()
        for obj in _sorted_for_apply(objects):
            metadata = obj.setdefault("metadata", {})
            metadata.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "Helm"
            annotations = metadata.setdefault("annotations", {})
            annotations["meta.helm.sh/release-name"] = release
            annotations["meta.helm.sh/release-namespace"] = namespace
            annotations[CHART_KEY_ANNOTATION] = key
            kinds = kube.known_kinds(store)
            try:
                result = kube.apply_object(store, obj, kinds, default_namespace=namespace, source=release)
                wanted.add(kube.object_key(result.obj))
            except KubectlError as error:
                errors.append(str(error).splitlines()[0])
        for other_key, obj in list(store["items"].items()):
            annotations = obj.get("metadata", {}).get("annotations") or {}
            if annotations.get(CHART_KEY_ANNOTATION) == key and other_key not in wanted:
                kube.delete_object(store, other_key)
        previous = current.get("status") or {}
        current["status"] = {
            "releaseName": release,
            "namespace": namespace,
            "version": str(meta.get("version")),
            "appVersion": str(meta.get("appVersion", "")),
            "revision": previous.get("revision", 0) + 1,
            "updated": rfc3339(),
            "valuesHash": expected_hash if not errors else "",
            "error": "; ".join(errors),
        }
        service.cluster.save_objects(store)
    service.cluster.event("chart-installed", chart=key, release=release, version=str(meta.get("version")), error="; ".join(errors))
    service.log("info", "chart %s installed as release %s" % (key, release))


def _remove_orphaned_releases(service):
    store = service.cluster.objects()
    charts = {kube.object_key(chart) for chart in _chart_objects(store)}
    orphans = [
        key
        for key, obj in store["items"].items()
        if (obj.get("metadata", {}).get("annotations") or {}).get(CHART_KEY_ANNOTATION) not in (None, *charts)
    ]
    if not orphans:
        return
    with service.cluster.locked():
        store = service.cluster.objects()
        for key in orphans:
            kube.delete_object(store, key)
        service.cluster.save_objects(store)
