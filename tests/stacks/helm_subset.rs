//! The Helm template subset of the k0s test double, for rendering the lab's stand-in charts in
//! tests: `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Release.Namespace }}`,
//! `{{ .Chart.Name }}`, `{{ .Chart.Version }}` and the pipeline `| quote`. Any other action, and
//! a value that is missing or not a scalar, is an error naming the template, so a stand-in that
//! leaves the subset or reads a value that neither the chart nor airlock sets fails here rather than in the lab.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A stand-in chart source: `charts/<name>/<version>/{Chart,values}.yaml` plus the templates
/// in `charts/<name>/templates/` that every version shares.
pub struct Chart {
    pub name: String,
    pub version: String,
    pub values: Value,
    templates: Vec<(PathBuf, String)>,
}

pub fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stacks/charts")
}

impl Chart {
    pub fn load(name: &str, version: &str) -> Chart {
        let dir = charts_dir().join(name);
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("no stand-in chart file {}: {e}", path.display()))
        };
        let chart: Value =
            yaml_serde::from_str(&read(dir.join(version).join("Chart.yaml"))).unwrap();
        assert_eq!(chart["name"], name, "{name} {version}: Chart.yaml name");
        assert_eq!(
            chart["version"], version,
            "{name} {version}: Chart.yaml version"
        );
        let values = yaml_serde::from_str(&read(dir.join(version).join("values.yaml"))).unwrap();

        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        paths.sort();
        let templates = paths
            .into_iter()
            .map(|path| (path.clone(), read(path)))
            .collect();
        Chart {
            name: name.to_string(),
            version: version.to_string(),
            values,
            templates,
        }
    }

    /// Renders every template with `overrides` merged over the chart's values, as Helm
    /// installs a release, and returns the objects.
    pub fn render(
        &self,
        release: &str,
        namespace: &str,
        overrides: &Value,
    ) -> Result<Vec<Value>, String> {
        let mut values = self.values.clone();
        merge_values(&mut values, overrides);
        let scope = serde_json::json!({
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace},
            "Chart": {"Name": self.name, "Version": self.version},
        });

        let mut objects = Vec::new();
        for (path, template) in &self.templates {
            let text = render_template(template, &scope)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for document in yaml_serde::Deserializer::from_str(&text) {
                let object: Value = serde::Deserialize::deserialize(document)
                    .map_err(|e| format!("{}: rendered YAML is invalid: {e}", path.display()))?;
                if !object.is_null() {
                    objects.push(object);
                }
            }
        }
        Ok(objects)
    }
}

/// Merges `overrides` into `values` as Helm coalesces user values over a chart's: maps merge
/// key by key, anything else replaces.
fn merge_values(values: &mut Value, overrides: &Value) {
    match (values, overrides) {
        (Value::Object(values), Value::Object(overrides)) => {
            for (key, value) in overrides {
                match values.get_mut(key) {
                    Some(existing) => merge_values(existing, value),
                    None => {
                        values.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (values, overrides) => *values = overrides.clone(),
    }
}

fn render_template(template: &str, scope: &Value) -> Result<String, String> {
    let mut output = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        output.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("an action opened with {{{{ is never closed: {after:.40}"))?;
        output.push_str(&render_action(&after[..end], scope)?);
        rest = &after[end + 2..];
    }
    output.push_str(rest);
    Ok(output)
}

fn render_action(action: &str, scope: &Value) -> Result<String, String> {
    let outside = || format!("{{{{{action}}}}} is outside the k0s test double's Helm subset");
    let mut stages = action.split('|').map(str::trim);
    let field = stages.next().unwrap_or_default();
    let path: Vec<&str> = field
        .strip_prefix('.')
        .ok_or_else(outside)?
        .split('.')
        .collect();
    let allowed = match path.as_slice() {
        ["Values", keys @ ..] => {
            !keys.is_empty()
                && keys.iter().all(|key| {
                    !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
        }
        ["Release", "Name" | "Namespace"] | ["Chart", "Name" | "Version"] => true,
        _ => false,
    };
    if !allowed {
        return Err(outside());
    }

    let value = path.iter().try_fold(scope, |value, key| value.get(key));
    let text = match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Bool(flag)) => flag.to_string(),
        Some(Value::Number(number)) => number.to_string(),
        _ => return Err(format!("{{{{{action}}}}} has no scalar value to print")),
    };
    let mut quoted = false;
    for stage in stages {
        if stage != "quote" || quoted {
            return Err(outside());
        }
        quoted = true;
    }
    if quoted {
        Ok(format!(
            "\"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        ))
    } else {
        Ok(text)
    }
}

#[test]
fn subset_renders_fields_and_quote() {
    let scope = serde_json::json!({
        "Values": {"a": {"b-c": "x\"y", "on": true, "n": 3}},
        "Release": {"Name": "r", "Namespace": "ns"},
        "Chart": {"Name": "c", "Version": "1.0.0"},
    });
    let text = "{{ .Values.a.b-c | quote }} {{ .Values.a.on }} {{.Values.a.n}} {{ .Release.Namespace }}/{{ .Chart.Name }}-{{ .Chart.Version }}";
    assert_eq!(
        render_template(text, &scope).unwrap(),
        r#""x\"y" true 3 ns/c-1.0.0"#
    );
}

#[test]
fn subset_rejects_other_actions() {
    let scope = serde_json::json!({"Values": {"a": {"b": "x"}}, "Release": {}, "Chart": {}});
    for action in [
        "{{ .Values.a.b | default \"y\" }}",
        "{{- .Values.a.b }}",
        "{{ if .Values.a.b }}",
        "{{ toYaml .Values.a }}",
        "{{ .Values.a }}",
        "{{ .Values.a.missing }}",
        "{{ .Release.Service }}",
        "{{ .Values.a.b | quote | quote }}",
        "{{ .Values.a.b",
    ] {
        assert!(render_template(action, &scope).is_err(), "{action}");
    }
}
