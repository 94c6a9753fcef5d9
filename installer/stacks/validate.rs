//! Validation of every rendered manifest before anything leaves the machine: each document parses,
//! names its namespace where its kind is namespaced, and matches its schema. Kubernetes kinds are
//! checked against the Kubernetes JSON schemas (from kubernetes-validate) of the k0s version's
//! Kubernetes minor, custom resources against the `openAPIV3Schema` of their CRD.

use std::cell::RefCell;
use std::collections::BTreeMap;

use include_dir::{Dir, include_dir};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::output::Stack;

static KUBERNETES_SCHEMAS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/schemas/kubernetes");
static CRD_SCHEMAS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/schemas/crds");

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Kubernetes kinds that have no namespace.
const CLUSTER_SCOPED: [&str; 10] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "RuntimeClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "PersistentVolume",
];

/// A manifest that is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{stack}: {file}: document {document} is not valid YAML: {message}")]
    Parse {
        stack: Stack,
        file: String,
        document: usize,
        message: String,
    },
    #[error("{stack}: {file}: document {document} is not a Kubernetes object: {message}")]
    NotAnObject {
        stack: Stack,
        file: String,
        document: usize,
        message: String,
    },
    #[error(
        "{stack}: {file}: {object} has no metadata.namespace; k0s applies manifests without a default namespace"
    )]
    MissingNamespace {
        stack: Stack,
        file: String,
        object: String,
    },
    #[error(
        "{stack}: {file}: no schema for {object} ({api_version}); neither Kubernetes {kubernetes} nor a CRD in the bundle defines it"
    )]
    NoSchema {
        stack: Stack,
        file: String,
        object: String,
        api_version: String,
        kubernetes: String,
    },
    #[error(
        "{stack}: {file}: {object} is invalid at {instance_path}: {message} (schema path {schema_path})"
    )]
    Schema {
        stack: Stack,
        file: String,
        object: String,
        instance_path: String,
        schema_path: String,
        message: String,
    },
    #[error("{stack}: {file}: {object}: spec.values is not a YAML mapping: {message}")]
    ChartValues {
        stack: Stack,
        file: String,
        object: String,
        message: String,
    },
}

/// A CRD or schema file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "no Kubernetes schemas for k0s {k0s_version}: airlock has them for Kubernetes {available}"
    )]
    UnsupportedKubernetes {
        k0s_version: String,
        available: String,
    },
    #[error("the CRD {name} from {source_name} is unusable: {message}")]
    Crd {
        name: String,
        source_name: String,
        message: String,
    },
}

/// One object of a validated manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The object itself, for callers that read more of it.
    #[serde(skip)]
    pub value: Value,
}

impl ObjectRef {
    fn label(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

struct CrdVersion {
    namespaced: bool,
    schema: Value,
}

/// Validates manifests for one Kubernetes minor version and one set of CRDs.
pub struct Validator {
    kubernetes: String,
    /// `$defs` and `kinds` of the embedded Kubernetes schemas.
    definitions: Value,
    kinds: BTreeMap<String, String>,
    /// `group/version Kind` to schema.
    crds: BTreeMap<String, CrdVersion>,
    compiled: RefCell<BTreeMap<String, std::rc::Rc<jsonschema::Validator>>>,
}

/// The Kubernetes minor of a k0s version: `v1.36.3+k0s.0` gives (1, 36).
pub fn kubernetes_minor(k0s_version: &str) -> Option<(u32, u32)> {
    let mut parts = k0s_version.trim_start_matches('v').split(['.', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Validator {
    /// Loads the Kubernetes schemas for `k0s_version`, the CRDs that airlock embeds, and those in
    /// `crd_sources`. Each source is a name and a YAML text with any number of documents, of which
    /// only CustomResourceDefinitions are read.
    pub fn new(
        k0s_version: &str,
        crd_sources: &[(String, String)],
    ) -> Result<Validator, SchemaError> {
        let available: Vec<(u32, u32)> = KUBERNETES_SCHEMAS
            .files()
            .filter_map(|file| {
                let name = file.path().file_name()?.to_str()?;
                kubernetes_minor(name.strip_suffix(".json")?)
            })
            .collect();
        let unsupported = || SchemaError::UnsupportedKubernetes {
            k0s_version: k0s_version.to_string(),
            available: available
                .iter()
                .map(|(a, b)| format!("{a}.{b}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let wanted = kubernetes_minor(k0s_version).ok_or_else(unsupported)?;
        if !available.contains(&wanted) {
            return Err(unsupported());
        }
        let file = format!("v{}.{}.json", wanted.0, wanted.1);
        let text = KUBERNETES_SCHEMAS
            .get_file(&file)
            .and_then(|file| file.contents_utf8())
            .ok_or_else(unsupported)?;
        let document: Value = serde_json::from_str(text).map_err(|_| unsupported())?;
        let kinds = document["kinds"]
            .as_object()
            .map(|kinds| {
                kinds
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();

        let mut validator = Validator {
            kubernetes: format!("{}.{}", wanted.0, wanted.1),
            definitions: document["$defs"].clone(),
            kinds,
            crds: BTreeMap::new(),
            compiled: RefCell::new(BTreeMap::new()),
        };
        for file in CRD_SCHEMAS.files() {
            let name = format!("schemas/crds/{}", file.path().display());
            validator.add_crds(&name, file.contents_utf8().unwrap_or_default())?;
        }
        for (name, text) in crd_sources {
            validator.add_crds(name, text)?;
        }
        Ok(validator)
    }

    /// The Kubernetes minor version whose schemas are in use, such as `1.36`.
    pub fn kubernetes(&self) -> &str {
        &self.kubernetes
    }

    fn add_crds(&mut self, source_name: &str, text: &str) -> Result<(), SchemaError> {
        for document in yaml_serde::Deserializer::from_str(text) {
            let crd_error = |name: &str, message: String| SchemaError::Crd {
                name: name.to_string(),
                source_name: source_name.to_string(),
                message,
            };
            let Ok(value) = Value::deserialize(document) else {
                return Err(crd_error("?", "a document is not valid YAML".to_string()));
            };
            if value["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let spec = &value["spec"];
            let (Some(group), Some(kind)) =
                (spec["group"].as_str(), spec["names"]["kind"].as_str())
            else {
                return Err(crd_error(
                    &name,
                    "spec.group or spec.names.kind is missing".into(),
                ));
            };
            let namespaced = spec["scope"] != "Cluster";
            for version in spec["versions"].as_array().into_iter().flatten() {
                let Some(version_name) = version["name"].as_str() else {
                    continue;
                };
                let schema = &version["schema"]["openAPIV3Schema"];
                if schema.is_null() {
                    return Err(crd_error(
                        &name,
                        format!("version {version_name} has no openAPIV3Schema"),
                    ));
                }
                let mut converted = openapi_to_json_schema(schema);
                if let Some(properties) = converted
                    .get_mut("properties")
                    .and_then(Value::as_object_mut)
                {
                    // Every object has these, whether or not the CRD's schema names them.
                    properties.insert("apiVersion".into(), json!({"type": "string"}));
                    properties.insert("kind".into(), json!({"type": "string"}));
                    properties.insert(
                        "metadata".into(),
                        json!({"$ref": format!("#/$defs/{OBJECT_META}")}),
                    );
                }
                self.crds.insert(
                    format!("{group}/{version_name} {kind}"),
                    CrdVersion {
                        namespaced,
                        schema: converted,
                    },
                );
            }
        }
        Ok(())
    }

    /// Parses and validates one manifest file and returns its objects.
    pub fn validate_file(
        &self,
        stack: Stack,
        file: &str,
        text: &str,
    ) -> Result<Vec<ObjectRef>, ManifestError> {
        let mut objects = Vec::new();
        for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let number = index + 1;
            let value = Value::deserialize(document).map_err(|e| ManifestError::Parse {
                stack,
                file: file.to_string(),
                document: number,
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            let object = self.validate_object(stack, file, number, value)?;
            objects.push(object);
        }
        Ok(objects)
    }

    fn validate_object(
        &self,
        stack: Stack,
        file: &str,
        document: usize,
        value: Value,
    ) -> Result<ObjectRef, ManifestError> {
        let not_object = |message: &str| ManifestError::NotAnObject {
            stack,
            file: file.to_string(),
            document,
            message: message.to_string(),
        };
        let api_version = value["apiVersion"]
            .as_str()
            .ok_or_else(|| not_object("apiVersion is missing"))?;
        let kind = value["kind"]
            .as_str()
            .ok_or_else(|| not_object("kind is missing"))?;
        let name = value["metadata"]["name"]
            .as_str()
            .ok_or_else(|| not_object("metadata.name is missing"))?;
        let object = ObjectRef {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: value["metadata"]["namespace"].as_str().map(String::from),
            name: name.to_string(),
            value: Value::Null,
        };

        let key = format!("{api_version} {kind}");
        let (namespaced, validator) = if let Some(definition) = self.kinds.get(&key) {
            let validator =
                self.compiled(&key, || json!({"$ref": format!("#/$defs/{definition}")}));
            (!CLUSTER_SCOPED.contains(&kind), validator)
        } else if let Some(crd) = self.crds.get(&key) {
            (crd.namespaced, self.compiled(&key, || crd.schema.clone()))
        } else {
            return Err(ManifestError::NoSchema {
                stack,
                file: file.to_string(),
                object: object.label(),
                api_version: api_version.to_string(),
                kubernetes: self.kubernetes.clone(),
            });
        };
        if namespaced && object.namespace.is_none() {
            return Err(ManifestError::MissingNamespace {
                stack,
                file: file.to_string(),
                object: object.label(),
            });
        }
        let validator = validator.map_err(|message| ManifestError::Schema {
            stack,
            file: file.to_string(),
            object: object.label(),
            instance_path: String::new(),
            schema_path: String::new(),
            message,
        })?;
        if let Some(error) = validator.iter_errors(&value).next() {
            return Err(ManifestError::Schema {
                stack,
                file: file.to_string(),
                object: object.label(),
                instance_path: display_path(&error.instance_path().to_string()),
                schema_path: error.schema_path().to_string(),
                message: error.to_string(),
            });
        }
        if kind == "Chart" {
            let values = value["spec"]["values"].as_str().unwrap_or("");
            let parsed: Result<Value, _> = yaml_serde::from_str(values);
            match parsed {
                Ok(Value::Object(_)) | Ok(Value::Null) => {}
                Ok(_) => {
                    return Err(ManifestError::ChartValues {
                        stack,
                        file: file.to_string(),
                        object: object.label(),
                        message: "it is a scalar or a list".to_string(),
                    });
                }
                Err(e) => {
                    return Err(ManifestError::ChartValues {
                        stack,
                        file: file.to_string(),
                        object: object.label(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(ObjectRef { value, ..object })
    }

    /// Compiles the schema of `key` once, with the Kubernetes definitions in scope.
    fn compiled(
        &self,
        key: &str,
        schema: impl FnOnce() -> Value,
    ) -> Result<std::rc::Rc<jsonschema::Validator>, String> {
        if let Some(validator) = self.compiled.borrow().get(key) {
            return Ok(validator.clone());
        }
        let mut schema = schema();
        if let Some(object) = schema.as_object_mut() {
            object.insert("$defs".into(), self.definitions.clone());
        }
        let validator = std::rc::Rc::new(
            jsonschema::validator_for(&schema)
                .map_err(|e| format!("the schema does not compile: {e}"))?,
        );
        self.compiled
            .borrow_mut()
            .insert(key.to_string(), validator.clone());
        Ok(validator)
    }
}

/// Turns a JSON pointer such as `/spec/template/0/name` into `spec.template[0].name`.
fn display_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        if segment.parse::<usize>().is_ok() {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    if path.is_empty() {
        "the top level".to_string()
    } else {
        path
    }
}

/// Converts a CRD's structural OpenAPI v3 schema into JSON Schema.
///
/// The API server prunes fields a structural schema does not name. Here such a field is an error
/// instead (`additionalProperties: false`), because it is almost always a misspelt key that would
/// silently disappear. `x-kubernetes-preserve-unknown-fields` keeps an object open.
pub fn openapi_to_json_schema(schema: &Value) -> Value {
    let Some(source) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in source {
        match key.as_str() {
            "type" | "required" | "enum" | "pattern" | "minimum" | "maximum"
            | "exclusiveMinimum" | "exclusiveMaximum" | "minLength" | "maxLength" | "minItems"
            | "maxItems" | "uniqueItems" | "minProperties" | "maxProperties" | "multipleOf" => {
                out.insert(key.clone(), value.clone());
            }
            "properties" => {
                let properties = value
                    .as_object()
                    .map(|properties| {
                        properties
                            .iter()
                            .map(|(name, schema)| (name.clone(), openapi_to_json_schema(schema)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" | "not" => {
                out.insert(key.clone(), openapi_to_json_schema(value));
            }
            "additionalProperties" => {
                let converted = if value.is_boolean() {
                    value.clone()
                } else {
                    openapi_to_json_schema(value)
                };
                out.insert(key.clone(), converted);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(openapi_to_json_schema)
                    .collect();
                out.insert(key.clone(), Value::Array(list));
            }
            _ => {}
        }
    }

    if source.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if source.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(kind)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([kind, "null"]));
    }
    let preserve = source.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if out.contains_key("properties") && !out.contains_key("additionalProperties") && !preserve {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> Validator {
        Validator::new("v1.36.3+k0s.0", &[]).unwrap()
    }

    #[test]
    fn kubernetes_minor_of_k0s_versions() {
        assert_eq!(kubernetes_minor("v1.36.3+k0s.0"), Some((1, 36)));
        assert_eq!(kubernetes_minor("1.34.1"), Some((1, 34)));
        assert_eq!(kubernetes_minor("v1.35"), Some((1, 35)));
        assert_eq!(kubernetes_minor("latest"), None);
    }

    #[test]
    fn unsupported_kubernetes_is_rejected() {
        let error = Validator::new("v1.20.1+k0s.0", &[]).err().unwrap();
        assert!(error.to_string().contains("1.36"), "{error}");
    }

    #[test]
    fn valid_namespace_passes() {
        let objects = validator()
            .validate_file(
                Stack::Tenants,
                "tenants/a.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
            )
            .unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].name, "a");
    }

    #[test]
    fn misspelt_field_names_its_path() {
        let text = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: q\n  namespace: a\nspec:\n  hrad: {}\n";
        let error = validator()
            .validate_file(Stack::Tenants, "tenants/a.yaml", text)
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ManifestError::Schema { .. }), "{message}");
        assert!(message.contains("tenants/a.yaml"), "{message}");
        assert!(message.contains("ResourceQuota a/q"), "{message}");
        assert!(message.contains("hrad"), "{message}");
    }

    #[test]
    fn wrong_type_names_instance_path() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: a\nspec:\n  podSelector: {}\n  policyTypes: Ingress\n";
        match validator()
            .validate_file(Stack::Tenants, "t.yaml", text)
            .unwrap_err()
        {
            ManifestError::Schema { instance_path, .. } => {
                assert_eq!(instance_path, "spec.policyTypes")
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn namespaced_kind_without_namespace_is_rejected() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let error = validator()
            .validate_file(Stack::Observability, "o.yaml", text)
            .unwrap_err();
        assert!(
            matches!(error, ManifestError::MissingNamespace { .. }),
            "{error}"
        );
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let text =
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: a\n";
        let error = validator()
            .validate_file(Stack::Policy, "p.yaml", text)
            .unwrap_err();
        assert!(matches!(error, ManifestError::NoSchema { .. }), "{error}");
    }

    #[test]
    fn chart_with_unparsable_values_is_rejected() {
        let text = "apiVersion: helm.k0sproject.io/v1beta1\nkind: Chart\nmetadata:\n  name: c\n  namespace: kube-system\nspec:\n  chartName: /x.tgz\n  releaseName: c\n  namespace: n\n  values: \"a: [\"\n";
        let error = validator()
            .validate_file(Stack::Policy, "p.yaml", text)
            .unwrap_err();
        assert!(
            matches!(error, ManifestError::ChartValues { .. }),
            "{error}"
        );
    }

    #[test]
    fn custom_resource_checked_against_crd() {
        let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
                port: {x-kubernetes-int-or-string: true}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
        let validator = Validator::new("v1.36.0", &[("crds.yaml".into(), crd.into())]).unwrap();
        let good = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: a\nspec:\n  size: 3\n  port: http\n  extra: {anything: 1}\n";
        validator
            .validate_file(Stack::Policy, "w.yaml", good)
            .unwrap();
        let bad = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: a\nspec:\n  size: three\n";
        match validator
            .validate_file(Stack::Policy, "w.yaml", bad)
            .unwrap_err()
        {
            ManifestError::Schema { instance_path, .. } => assert_eq!(instance_path, "spec.size"),
            other => panic!("{other}"),
        }
        let misspelt = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: a\nspec:\n  sise: 3\n";
        assert!(
            validator
                .validate_file(Stack::Policy, "w.yaml", misspelt)
                .is_err()
        );
        let bad_metadata = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: a\n  labels: [x]\n";
        assert!(
            validator
                .validate_file(Stack::Policy, "w.yaml", bad_metadata)
                .is_err()
        );
    }
}
