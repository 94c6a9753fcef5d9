//! A ValidatingAdmissionPolicy evaluator for tests. It runs a rendered policy's own CEL
//! expressions with the `cel` crate, in the order and with the bindings of the Kubernetes API
//! server (admissionregistration.k8s.io/v1 as of Kubernetes 1.30):
//!
//! 1. `matchConstraints.resourceRules` pick the requests by operation, group, version, resource
//!    and subresource;
//! 2. `matchConditions` run in order: one `false` skips the policy, an error with no `false`
//!    applies `failurePolicy`;
//! 3. `variables` are reachable as `variables.<name>`, each seeing the ones before it;
//! 4. every validation that is `false` is a violation with its `message`, and an error applies
//!    `failurePolicy`.
//!
//! Every expression can read `object` (null on DELETE), `oldObject` (null on CREATE), `params`
//! (null, as no policy has a `paramKind`), `namespaceObject` (null for cluster-scoped
//! resources) and `request` (the AdmissionRequest's fields). The API server also binds
//! `authorizer`; no airlock policy uses it, so an expression that did would fail here with an
//! undeclared reference. Likewise the Kubernetes CEL libraries (quantity, url, the string and
//! list extensions) are absent: a policy that calls one fails here until this file provides it.
//!
//! Fields this evaluator does not implement (`paramKind`, selectors, `excludeResourceRules`,
//! `messageExpression`, `auditAnnotations`) make [`Policy::parse`] panic, so a policy that
//! starts to use one cannot be evaluated wrongly in silence.

use std::collections::HashMap;

use cel::{Context, Program};
use serde_json::{Value, json};

/// The admission operations a resource rule lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One admission request as the API server hands it to a policy.
#[derive(Clone, Debug)]
pub struct Request {
    pub operation: Operation,
    pub group: String,
    pub version: String,
    /// The resource's plural name, such as `pods`.
    pub resource: String,
    /// Such as `ephemeralcontainers`; empty for the main resource.
    pub sub_resource: String,
    pub kind: String,
    pub object: Value,
    pub old_object: Value,
    pub namespace_object: Value,
}

impl Request {
    /// Builds a CREATE of `object`, in `namespace` (a Namespace object) unless that is null.
    pub fn create(object: Value, namespace: Value) -> Request {
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group.to_string(), version.to_string()),
            None => (String::new(), api_version),
        };
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        Request {
            operation: Operation::Create,
            resource: plural(&kind),
            group,
            version,
            sub_resource: String::new(),
            kind,
            object: without_nulls(object),
            old_object: Value::Null,
            namespace_object: without_nulls(namespace),
        }
    }

    /// Builds an UPDATE from `old` to `object`.
    pub fn update(old: Value, object: Value, namespace: Value) -> Request {
        Request {
            operation: Operation::Update,
            old_object: without_nulls(old),
            ..Request::create(object, namespace)
        }
    }

    /// Builds a DELETE of `old`, for which the API server binds `object` to null.
    pub fn delete(old: Value, namespace: Value) -> Request {
        Request {
            operation: Operation::Delete,
            object: Value::Null,
            ..Request::update(old.clone(), old, namespace)
        }
    }

    /// Builds what `kubectl debug` sends: an UPDATE of the `pods/ephemeralcontainers` subresource, whose object
    /// is the whole Pod with the new ephemeral container.
    pub fn add_ephemeral_container(old: Value, object: Value, namespace: Value) -> Request {
        Request {
            sub_resource: "ephemeralcontainers".to_string(),
            ..Request::update(old, object, namespace)
        }
    }

    /// Builds the `request` variable: the AdmissionRequest fields a policy can read.
    fn binding(&self) -> Value {
        let metadata = if self.object.is_null() {
            &self.old_object["metadata"]
        } else {
            &self.object["metadata"]
        };
        json!({
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "subResource": self.sub_resource,
            "requestKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "requestResource": {"group": self.group, "version": self.version, "resource": self.resource},
            "requestSubResource": self.sub_resource,
            "name": metadata["name"].as_str().unwrap_or_default(),
            "namespace": metadata["namespace"].as_str().unwrap_or_default(),
            "operation": self.operation.name(),
            "userInfo": {"username": "tenant-user", "groups": ["system:authenticated"]},
            "dryRun": false,
        })
    }
}

/// Returns the resource name the API server serves a kind under (only kinds these tests use).
fn plural(kind: &str) -> String {
    match kind {
        "VirtualMachineInstance" => "virtualmachineinstances".to_string(),
        other => format!("{}s", other.to_lowercase()),
    }
}

/// Drops null fields, as decoding into the API types does before admission.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// What a policy decides about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The resource rules or a match condition left the request out.
    NotMatched,
    Admitted,
    /// Validations returned false; their messages, in order.
    Denied(Vec<String>),
    /// An expression failed to evaluate; with `failurePolicy: Fail` the request is rejected.
    Failed(String),
}

struct ResourceRule {
    groups: Vec<String>,
    versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

impl ResourceRule {
    fn matches(&self, request: &Request) -> bool {
        let listed =
            |list: &[String], value: &str| list.iter().any(|item| item == "*" || item == value);
        let resource_matches = self.resources.iter().any(|resource| {
            let (main, sub) = resource.split_once('/').unwrap_or((resource, ""));
            let main_matches = main == "*" || main == request.resource;
            let sub_matches = sub == "*" || sub == request.sub_resource;
            main_matches && sub_matches
        });
        listed(&self.groups, &request.group)
            && listed(&self.versions, &request.version)
            && listed(&self.operations, request.operation.name())
            && resource_matches
    }
}

struct NamedExpression {
    name: String,
    program: Program,
    text: String,
}

struct Validation {
    expression: Program,
    text: String,
    message: String,
}

/// A ValidatingAdmissionPolicy read from rendered YAML, its expressions compiled.
pub struct Policy {
    pub name: String,
    pub description: String,
    pub failure_policy: String,
    rules: Vec<ResourceRule>,
    match_conditions: Vec<NamedExpression>,
    variables: Vec<NamedExpression>,
    validations: Vec<Validation>,
}

fn parse_rules(policy: &str, constraints: &Value) -> Vec<ResourceRule> {
    for unsupported in [
        "namespaceSelector",
        "objectSelector",
        "excludeResourceRules",
    ] {
        assert!(
            constraints.get(unsupported).is_none(),
            "policy {policy}: the test evaluator does not implement matchConstraints.{unsupported}"
        );
    }
    constraints["resourceRules"]
        .as_array()
        .unwrap_or_else(|| panic!("policy {policy} has no resourceRules"))
        .iter()
        .map(|rule| {
            assert!(
                rule.get("resourceNames").is_none(),
                "policy {policy}: the test evaluator does not implement resourceNames"
            );
            ResourceRule {
                groups: strings(&rule["apiGroups"]),
                versions: strings(&rule["apiVersions"]),
                operations: strings(&rule["operations"]),
                resources: strings(&rule["resources"]),
            }
        })
        .collect()
}

/// Compiles a list of `{name, expression}` entries: match conditions or variables.
fn parse_named(policy: &str, list: &Value, field: &str) -> Vec<NamedExpression> {
    let Some(items) = list.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let name = item["name"].as_str().unwrap().to_string();
            let text = item["expression"].as_str().unwrap().to_string();
            NamedExpression {
                program: compile(policy, &format!("{field} {name}"), &text),
                name,
                text,
            }
        })
        .collect()
}

fn parse_validations(policy: &str, list: &Value) -> Vec<Validation> {
    list.as_array()
        .unwrap_or_else(|| panic!("policy {policy} has no validations"))
        .iter()
        .map(|validation| {
            assert!(
                validation.get("messageExpression").is_none(),
                "policy {policy}: the test evaluator does not implement messageExpression"
            );
            let text = validation["expression"].as_str().unwrap().to_string();
            Validation {
                expression: compile(policy, "validation", &text),
                message: validation["message"].as_str().unwrap_or(&text).to_string(),
                text,
            }
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn compile(policy: &str, field: &str, text: &str) -> Program {
    Program::compile(text)
        .unwrap_or_else(|e| panic!("policy {policy}: {field} does not compile: {e}\n{text}"))
}

impl Policy {
    pub fn parse(object: &Value) -> Policy {
        assert_eq!(object["kind"], "ValidatingAdmissionPolicy");
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let spec = &object["spec"];
        for unsupported in ["paramKind", "auditAnnotations"] {
            assert!(
                spec.get(unsupported).is_none(),
                "policy {name}: the test evaluator does not implement spec.{unsupported}"
            );
        }

        Policy {
            description: object["metadata"]["annotations"]["airlock.io/description"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            failure_policy: spec["failurePolicy"].as_str().unwrap_or("Fail").to_string(),
            rules: parse_rules(&name, &spec["matchConstraints"]),
            match_conditions: parse_named(&name, &spec["matchConditions"], "matchCondition"),
            variables: parse_named(&name, &spec["variables"], "variable"),
            validations: parse_validations(&name, &spec["validations"]),
            name,
        }
    }

    /// Decides a request as the API server would.
    pub fn evaluate(&self, request: &Request) -> Outcome {
        if !self.rules.iter().any(|rule| rule.matches(request)) {
            return Outcome::NotMatched;
        }

        let mut context = Context::default();
        let bindings = [
            ("object", &request.object),
            ("oldObject", &request.old_object),
            ("namespaceObject", &request.namespace_object),
            ("params", &Value::Null),
        ];
        for (variable, value) in bindings {
            context
                .add_variable(variable, cel::to_value(value).unwrap())
                .unwrap();
        }
        context
            .add_variable("request", cel::to_value(request.binding()).unwrap())
            .unwrap();

        let mut condition_error = None;
        for condition in &self.match_conditions {
            let (name, text) = (&condition.name, &condition.text);
            match condition.program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Outcome::NotMatched,
                Ok(other) => {
                    condition_error.get_or_insert(format!(
                        "matchCondition {name} returned {other:?}, not a bool: {text}"
                    ));
                }
                Err(e) => {
                    condition_error
                        .get_or_insert(format!("matchCondition {name} failed: {e}: {text}"));
                }
            }
        }
        if let Some(error) = condition_error {
            return self.failure(error);
        }

        // A variable that fails stays unbound, so an expression that reads it fails too, as
        // the API server's lazy evaluation would report it only when read.
        let mut variables: HashMap<String, cel::Value> = HashMap::new();
        let mut variable_errors = Vec::new();
        for variable in &self.variables {
            context.add_variable_from_value("variables", variables.clone());
            match variable.program.execute(&context) {
                Ok(value) => {
                    variables.insert(variable.name.clone(), value);
                }
                Err(e) => variable_errors.push(format!(
                    "variable {} failed: {e}: {}",
                    variable.name, variable.text
                )),
            }
        }
        context.add_variable_from_value("variables", variables);

        let mut messages = Vec::new();
        for validation in &self.validations {
            match validation.expression.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => messages.push(validation.message.clone()),
                Ok(other) => {
                    return self.failure(format!(
                        "validation returned {other:?}, not a bool: {}",
                        validation.text
                    ));
                }
                Err(e) => {
                    return self.failure(format!(
                        "validation failed: {e}: {}; {}",
                        validation.text,
                        variable_errors.join("; ")
                    ));
                }
            }
        }
        if messages.is_empty() {
            Outcome::Admitted
        } else {
            Outcome::Denied(messages)
        }
    }

    fn failure(&self, error: String) -> Outcome {
        assert_eq!(
            self.failure_policy, "Fail",
            "policy {}: the tests expect failurePolicy Fail",
            self.name
        );
        Outcome::Failed(error)
    }
}
