"""A tiny subset of Helm: load a chart archive (.tgz) and render its templates.

Supported template actions: `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}`,
`{{ .Chart.Name }}`, `{{ .Chart.Version }}`, `{{ .Chart.AppVersion }}`, the pipelines `| quote`
and `| default "x"`, comments `{{/* */}}` and the whitespace trims `{{-` and `-}}`. Anything else
makes the chart fail with a message naming the action, so a test chart cannot silently render
wrong.
"""

import re
import tarfile

import yaml

from .config import load_all_yaml, load_yaml

ACTION = re.compile(r"(\s*)\{\{(-?)\s*(.*?)\s*(-?)\}\}(\s*)", re.S)
MAX_FILE = 4 * 1024 * 1024


class ChartError(Exception):
    """A chart that Helm (or this subset of it) cannot install; the message goes into the
    Chart object's status.error."""


def load_chart(path):
    """Returns (Chart.yaml dict, values dict, {template path: text}) of a chart archive."""
    try:
        archive = tarfile.open(path, "r:gz")
    except (OSError, tarfile.TarError) as error:
        raise ChartError("failed to load chart %s: %s" % (path, error))
    chart, values, templates = None, {}, {}
    with archive:
        for member in archive.getmembers():
            if not member.isfile() or member.size > MAX_FILE:
                continue
            parts = member.name.lstrip("./").split("/", 1)
            if len(parts) != 2:
                continue
            relative = parts[1]
            text = archive.extractfile(member).read().decode("utf-8", "replace")
            if relative == "Chart.yaml":
                chart = load_yaml(text) or {}
            elif relative == "values.yaml":
                values = load_yaml(text) or {}
            elif relative.startswith("templates/") and "/" not in relative[len("templates/") :]:
                name = relative[len("templates/") :]
                if name.endswith((".yaml", ".yml")) and not name.startswith("_"):
                    templates[relative] = text
    if chart is None:
        raise ChartError("failed to load chart %s: Chart.yaml file is missing" % path)
    for field in ("name", "version"):
        if not chart.get(field):
            raise ChartError("failed to load chart %s: validation: chart.metadata.%s is required" % (path, field))
    return chart, values, templates


def merge_values(base, overlay):
    result = dict(base)
    for key, value in (overlay or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_values(result[key], value)
        else:
            result[key] = value
    return result


def _lookup(scope, path, template):
    value = scope
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _format(value):
    if value is None:
        return "<no value>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        # Helm prints Go's map syntax here; templates should use toYaml, which this subset lacks.
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def _evaluate(expression, scope, template):
    stages = [stage.strip() for stage in expression.split("|")]
    head = stages[0]
    if not re.match(r"^\.(Values|Release|Chart)(\.[A-Za-z0-9_-]+)*$", head):
        raise ChartError(
            "%s: unsupported template action {{ %s }}: the k0s test double renders only .Values, .Release and .Chart fields"
            % (template, expression)
        )
    path = head[1:].split(".")
    value = _lookup(scope, path, template)
    for stage in stages[1:]:
        if stage == "quote":
            value = '"%s"' % ("" if value is None else _format(value)).replace('"', '\\"')
        elif stage.startswith("default "):
            default = stage[len("default ") :].strip()
            if value in (None, "", False, 0, [], {}):
                value = default[1:-1] if default.startswith('"') and default.endswith('"') else default
        else:
            raise ChartError("%s: unsupported template function %r in {{ %s }}" % (template, stage, expression))
    return _format(value) if not (isinstance(value, str) and stages[-1] == "quote") else value


def render_template(text, scope, template):
    def replace(match):
        leading, trim_left, expression, trim_right, trailing = match.groups()
        if expression.startswith("/*") and expression.endswith("*/"):
            rendered = ""
        else:
            rendered = _evaluate(expression, scope, template)
        return ("" if trim_left else leading) + rendered + ("" if trim_right else trailing)

    return ACTION.sub(replace, text)


def render(path, release_name, namespace, user_values):
    """Renders a chart archive into a list of objects; raises ChartError."""
    chart, values, templates = load_chart(path)
    scope = {
        "Values": merge_values(values, user_values),
        "Release": {"Name": release_name, "Namespace": namespace, "Service": "Helm", "Revision": 1, "IsInstall": True},
        "Chart": {"Name": chart.get("name"), "Version": chart.get("version"), "AppVersion": chart.get("appVersion", "")},
    }
    objects = []
    for template in sorted(templates):
        text = render_template(templates[template], scope, template)
        try:
            objects.extend(document for document in load_all_yaml(text) if isinstance(document, dict))
        except yaml.YAMLError as error:
            raise ChartError("YAML parse error on %s/%s: %s" % (chart["name"], template, " ".join(str(error).split())))
    return chart, objects
