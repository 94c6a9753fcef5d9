//! Classic Helm chart repositories: an `index.yaml` that lists each chart version with the URLs
//! of its archive and the archive's sha256 digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use url::Url;

use super::FetchError;
use super::http::get_document;
use crate::bundle::spec::ChartSource;
use crate::digest::Digest;

/// The largest `index.yaml` airlock reads; the indexes of large public repositories are tens of
/// megabytes.
const MAX_INDEX_SIZE: u64 = 128 << 20;

/// A chart version found in a repository index.
#[derive(Clone, Debug)]
pub(crate) struct IndexedChart {
    /// The index the chart was found in, for messages.
    pub index: Url,
    pub archive: Url,
    /// The archive's digest as the index lists it; Helm repositories may leave it out.
    pub digest: Option<Digest>,
}

#[derive(Deserialize)]
struct RepositoryIndex {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    #[serde(deserialize_with = "string_or_number")]
    version: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
}

/// Finds `chart` in its repository's index.
// NOTE: classic repositories are read without credentials; a repository behind basic auth fails
// with HTTP 401 until the specification can name credentials for it.
pub(crate) async fn find(
    client: &reqwest::Client,
    chart: &ChartSource,
    artifact: &str,
) -> Result<IndexedChart, FetchError> {
    let base = repository_base(&chart.repo)?;
    let index_url = base
        .join("index.yaml")
        .map_err(|error| invalid_index(&base, error.to_string()))?;
    let text = get_document(client, &index_url, MAX_INDEX_SIZE).await?;
    let index: RepositoryIndex = yaml_serde::from_slice(&text)
        .map_err(|error| invalid_index(&index_url, error.to_string()))?;
    let versions = index
        .entries
        .get(&chart.name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Chart versions are SemVer, and some repositories write them with a leading `v`.
    let bare = |version: &str| version.trim_start_matches('v').to_string();
    let entry = versions
        .iter()
        .find(|entry| entry.version == chart.version)
        .or_else(|| {
            versions
                .iter()
                .find(|entry| bare(&entry.version) == bare(&chart.version))
        });
    let Some(entry) = entry else {
        return Err(FetchError::ChartNotFound {
            artifact: artifact.to_string(),
            index: index_url.to_string(),
            name: chart.name.clone(),
            version: chart.version.clone(),
            available: versions
                .iter()
                .take(10)
                .map(|e| e.version.clone())
                .collect(),
        });
    };
    let Some(first_url) = entry.urls.first() else {
        return Err(invalid_index(
            &index_url,
            format!("{} {} lists no URL", chart.name, entry.version),
        ));
    };
    // Relative URLs are relative to the repository, as Helm resolves them.
    let archive = base.join(first_url).map_err(|error| {
        invalid_index(&index_url, format!("invalid URL {first_url:?}: {error}"))
    })?;
    let digest = match entry.digest.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<Digest>()
                .or_else(|_| Digest::from_hex(text))
                .map_err(|_| {
                    invalid_index(
                        &index_url,
                        format!(
                            "{} {} has an invalid digest {text:?}",
                            chart.name, entry.version
                        ),
                    )
                })?,
        ),
    };
    Ok(IndexedChart {
        index: index_url,
        archive,
        digest,
    })
}

/// Returns the repository URL with a trailing `/`, so that joining keeps its last segment.
fn repository_base(repo: &str) -> Result<Url, FetchError> {
    let with_slash = format!("{}/", repo.trim_end_matches('/'));
    Url::parse(&with_slash).map_err(|error| FetchError::InvalidIndex {
        url: repo.to_string(),
        reason: error.to_string(),
    })
}

fn invalid_index(url: &Url, reason: String) -> FetchError {
    FetchError::InvalidIndex {
        url: url.to_string(),
        reason,
    }
}

/// Reads a version written as a string or, unquoted, as a YAML number (`version: 1.0`).
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Version {
        Text(String),
        Integer(i64),
        Float(f64),
    }
    Ok(match Version::deserialize(deserializer)? {
        Version::Text(text) => text,
        Version::Integer(number) => number.to_string(),
        Version::Float(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_parses_relative_urls_and_numeric_versions() {
        let index: RepositoryIndex = yaml_serde::from_str(
            "apiVersion: v1\nentries:\n  demo:\n  - version: 2\n    digest: abc\n    urls: [charts/demo-1.0.tgz]\n    created: 2026-01-01T00:00:00Z\n",
        )
        .unwrap();
        let entry = &index.entries["demo"][0];
        assert_eq!(entry.version, "2");
        assert_eq!(entry.urls, ["charts/demo-1.0.tgz"]);
        let base = repository_base("http://127.0.0.1:8080/repo").unwrap();
        assert_eq!(
            base.join(&entry.urls[0]).unwrap().as_str(),
            "http://127.0.0.1:8080/repo/charts/demo-1.0.tgz"
        );
    }
}
