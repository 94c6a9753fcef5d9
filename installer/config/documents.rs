//! Splitting cluster files into YAML documents and sorting them by `apiVersion` and `kind`, as
//! k0sctl does: one k0sctl `Cluster`, any number of k0s `ClusterConfig` documents, and every other
//! document kept as a manifest to apply once the cluster is up.

use serde::{Deserialize, Serialize};
use yaml_serde::Value;

use super::error::{Location, Problem};
use super::index::{self, ScannedDocument};
use super::locate::Locator;
use super::source::Source;

pub const K0SCTL_API_VERSION: &str = "k0sctl.k0sproject.io/v1beta1";
pub const K0S_API_VERSION: &str = "k0s.k0sproject.io/v1beta1";

/// A document that is neither the cluster nor k0s configuration, applied with
/// `k0s kubectl apply` after the cluster is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The location of the document's first line.
    pub origin: Location,
    pub api_version: String,
    pub kind: String,
    /// `metadata.name`, when set.
    pub name: Option<String>,
    /// The document's text after variable substitution, without `---` markers.
    pub text: String,
}

/// One parsed document of a file.
pub struct Document {
    pub value: Value,
    /// Positions of its nodes, or `None` when the event parser and libyaml disagreed on the file.
    pub scanned: Option<ScannedDocument>,
}

/// One cluster file with its documents.
pub struct ParsedFile {
    pub source: Source,
    pub documents: Vec<Document>,
}

impl ParsedFile {
    /// Parses every document with libyaml (through `yaml_serde`), whose messages users of
    /// k0sctl know, and indexes positions with the event parser.
    pub fn parse(source: Source) -> Result<ParsedFile, Problem> {
        let mut values = Vec::new();
        for document in yaml_serde::Deserializer::from_str(source.text()) {
            // yaml_serde repeats a syntax error for every later document: stop at the first.
            let mut value =
                Value::deserialize(document).map_err(|error| yaml_problem(&source, &error))?;
            value
                .apply_merge()
                .map_err(|error| yaml_problem(&source, &error))?;
            if !value.is_null() {
                values.push(value);
            }
        }

        let scanned = match index::scan_documents(source.text()) {
            Ok(scanned) => scanned
                .into_iter()
                .filter(|document| !document.empty)
                .collect::<Vec<_>>(),
            Err(failure) => {
                tracing::debug!(
                    file = source.name.as_str(),
                    line = failure.mark.line,
                    error = failure.message.as_str(),
                    "cannot index positions"
                );
                Vec::new()
            }
        };
        let documents = if scanned.len() == values.len() {
            values
                .into_iter()
                .zip(scanned)
                .map(|(value, scanned)| Document {
                    value,
                    scanned: Some(scanned),
                })
                .collect()
        } else {
            tracing::debug!(
                file = source.name.as_str(),
                "positions unavailable: the YAML parsers found different documents"
            );
            values
                .into_iter()
                .map(|value| Document {
                    value,
                    scanned: None,
                })
                .collect()
        };
        Ok(ParsedFile { source, documents })
    }
}

fn yaml_problem(source: &Source, error: &yaml_serde::Error) -> Problem {
    let mut message = error.to_string();
    let location = error.location().map(|l| {
        // The position goes into the location, which maps it back through variable substitution.
        message = message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
        source.location(l.line(), l.column().saturating_sub(1))
    });
    Problem::new(
        format!("invalid YAML ({message})"),
        location.or_else(|| Some(source.start())),
    )
    .with_fix("check the indentation and quoting around this position")
}

/// The kind of a document, by its `apiVersion` and `kind`.
pub enum DocumentKind {
    /// The k0sctl cluster document (`kind: Cluster`, any case).
    Cluster,
    /// k0s configuration to merge into `spec.k0s.config`.
    K0sConfig,
    /// Any other Kubernetes object.
    Manifest { api_version: String, kind: String },
}

/// Classifies a document, or returns the problem that makes it unusable.
pub fn classify(document: &Document, locator: &Locator<'_>) -> Result<DocumentKind, Problem> {
    let at = |path: &str| locator.at(path, index::Site::Value);
    let Some(mapping) = document.value.as_mapping() else {
        return Err(
            Problem::new("document is not a mapping", Some(locator.document_start()))
                .with_fix("each document needs apiVersion, kind and the object's fields"),
        );
    };
    let text = |field: &str| {
        mapping
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let api_version = text("apiVersion").unwrap_or_default();
    let kind = text("kind").unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        return Err(Problem::new(format!("document has no {missing}"), Some(locator.document_start()))
            .with_fix(format!("set apiVersion: {K0SCTL_API_VERSION} and kind: Cluster for the cluster, or the object's own apiVersion and kind")));
    }

    if api_version == K0SCTL_API_VERSION {
        if kind.eq_ignore_ascii_case("cluster") {
            return Ok(DocumentKind::Cluster);
        }
        let fix = if kind.eq_ignore_ascii_case("clusterconfig") {
            format!(
                "change kind to Cluster; a k0s ClusterConfig document takes apiVersion: {K0S_API_VERSION}"
            )
        } else {
            "change kind to Cluster".to_string()
        };
        return Err(Problem::new(
            format!("kind {kind:?} with apiVersion {K0SCTL_API_VERSION}"),
            at("kind"),
        )
        .with_fix(fix));
    }
    if let Some(version) = api_version.strip_prefix("k0sctl.k0sproject.io/") {
        return Err(Problem::new(
            format!("unsupported k0sctl apiVersion {version:?}"),
            at("apiVersion"),
        )
        .with_fix(format!("use apiVersion: {K0SCTL_API_VERSION}")));
    }
    if api_version == K0S_API_VERSION && kind.eq_ignore_ascii_case("clusterconfig") {
        return Ok(DocumentKind::K0sConfig);
    }
    Ok(DocumentKind::Manifest { api_version, kind })
}

/// Builds the manifest record of a document.
pub fn manifest(
    document: &Document,
    locator: &Locator<'_>,
    api_version: String,
    kind: String,
) -> Manifest {
    let text = match &document.scanned {
        Some(scanned) => locator.source.text()[scanned.text.clone()].to_string(),
        // Without positions the document is written out again from its parsed value.
        None => yaml_serde::to_string(&document.value).unwrap_or_default(),
    };
    let name = document
        .value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Manifest {
        origin: locator.document_start(),
        api_version,
        kind,
        name,
        text,
    }
}

/// Merges `overlay` into `base`: mappings merge key by key and recursively, anything else in
/// the overlay replaces what was there.
pub fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn deep_merge_merges_mappings_and_replaces_the_rest() {
        let mut base =
            yaml("spec: {telemetry: {enabled: false}, network: {provider: kuberouter}, list: [1]}");
        deep_merge(
            &mut base,
            yaml(
                "spec: {network: {provider: calico}, extensions: {helm: {concurrencyLevel: 5}}, list: [2]}",
            ),
        );
        assert_eq!(
            base,
            yaml(
                "spec: {telemetry: {enabled: false}, network: {provider: calico}, list: [2], extensions: {helm: {concurrencyLevel: 5}}}"
            )
        );
    }
}
