//! The k0s configuration (`/etc/k0s/k0s.yaml`) airlock writes on each controller.
//!
//! The base comes from `templates/k0s/k0s.yaml.j2`; the cluster file's `spec.k0s.config` is
//! merged over it as k0sctl merges it; then airlock enforces what an air-gapped cluster needs:
//! every controller address in the API certificate's SANs, images never pulled, and telemetry
//! off.

use minijinja::{Environment, context};
use yaml_serde::Value;

use crate::config::deep_merge;

const TEMPLATE: &str = include_str!("../../templates/k0s/k0s.yaml.j2");

/// The first line of every file airlock writes, so that a later run knows the file is its own.
pub const HEADER: &str = "# generated-by-airlock: changes here are replaced by the next apply";

/// What one controller's configuration is built from.
pub struct ConfigInput<'a> {
    pub cluster_name: &'a str,
    /// The cluster file's `spec.k0s.config`, merged with its ClusterConfig documents.
    pub user_config: Option<&'a Value>,
    /// Addresses for the API server certificate: every controller's SSH and private address.
    pub sans: Vec<String>,
    /// This controller's address for etcd peers.
    pub peer_address: Option<String>,
}

/// A configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRenderError {
    #[error("the k0s configuration template failed: {0}")]
    Template(#[from] minijinja::Error),
    #[error("the k0s configuration is not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("spec.k0s.config must be a mapping")]
    NotAMapping,
}

/// A rendered configuration and the user settings airlock overrode, for warnings.
pub struct RenderedConfig {
    pub text: String,
    pub overridden: Vec<String>,
}

/// Builds the configuration for one controller.
pub fn render(input: &ConfigInput<'_>) -> Result<RenderedConfig, ConfigRenderError> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let base_text = environment.render_str(
        TEMPLATE,
        context! {
            cluster_name => input.cluster_name,
            sans => &input.sans,
            peer_address => &input.peer_address,
        },
    )?;
    let mut config: Value = yaml_serde::from_str(&base_text)?;
    let mut overridden = Vec::new();

    if let Some(user) = input.user_config {
        if !user.is_mapping() {
            return Err(ConfigRenderError::NotAMapping);
        }
        let user_sans = strings_at(user, &["spec", "api", "sans"]);
        deep_merge(&mut config, user.clone());
        // The user's SANs add to airlock's; they never replace the controller addresses.
        let mut sans = input.sans.clone();
        for san in user_sans {
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        set(
            &mut config,
            &["spec", "api", "sans"],
            Value::Sequence(sans.into_iter().map(Value::String).collect()),
        );
        if get(&config, &["spec", "storage", "type"])
            .and_then(Value::as_str)
            .is_some_and(|kind| kind != "etcd")
            && let Some(storage) =
                get_mut(&mut config, &["spec", "storage"]).and_then(Value::as_mapping_mut)
        {
            storage.remove("etcd");
        }
    }
    // ClusterConfig documents may spell the kind in any case; k0s accepts only this spelling.
    set(
        &mut config,
        &["apiVersion"],
        Value::from("k0s.k0sproject.io/v1beta1"),
    );
    set(&mut config, &["kind"], Value::from("ClusterConfig"));
    enforce(
        &mut config,
        &["spec", "images", "default_pull_policy"],
        Value::from("Never"),
        &mut overridden,
    );
    enforce(
        &mut config,
        &["spec", "telemetry", "enabled"],
        Value::Bool(false),
        &mut overridden,
    );

    let text = format!("{HEADER}\n{}", yaml_serde::to_string(&config)?);
    Ok(RenderedConfig { text, overridden })
}

/// Sets `path` to `value`, recording the path when the user had set something else.
fn enforce(config: &mut Value, path: &[&str], value: Value, overridden: &mut Vec<String>) {
    if let Some(existing) = get(config, path)
        && *existing != value
    {
        overridden.push(format!(
            "{} ({:?} replaced by {:?})",
            path.join("."),
            existing,
            value
        ));
    }
    set(config, path, value);
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |current, key| current.get(*key))
}

fn get_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter()
        .try_fold(value, |current, key| current.get_mut(*key))
}

fn strings_at(value: &Value, path: &[&str]) -> Vec<String> {
    get(value, path)
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set(value: &mut Value, path: &[&str], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for key in parents {
        if !current.get(*key).is_some_and(Value::is_mapping)
            && let Some(mapping) = current.as_mapping_mut()
        {
            mapping.insert(Value::from(*key), Value::Mapping(Default::default()));
        }
        current = match current.get_mut(*key) {
            Some(next) => next,
            None => return,
        };
    }
    if let Some(mapping) = current.as_mapping_mut() {
        mapping.insert(Value::from(*last), new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(user: Option<&Value>) -> ConfigInput<'_> {
        ConfigInput {
            cluster_name: "lab",
            user_config: user,
            sans: vec!["127.0.1.11".into(), "127.0.1.12".into()],
            peer_address: Some("127.0.1.11".into()),
        }
    }

    fn parse(text: &str) -> Value {
        yaml_serde::from_str(text).unwrap()
    }

    #[test]
    fn base_config_is_air_gapped() {
        let rendered = render(&input(None)).unwrap();
        assert!(rendered.text.starts_with(HEADER));
        let config = parse(&rendered.text);
        assert_eq!(config["spec"]["images"]["default_pull_policy"], "Never");
        assert_eq!(config["spec"]["telemetry"]["enabled"], false);
        assert_eq!(
            config["spec"]["storage"]["etcd"]["peerAddress"],
            "127.0.1.11"
        );
        assert_eq!(config["spec"]["api"]["sans"][1], "127.0.1.12");
        assert!(rendered.overridden.is_empty());
    }

    #[test]
    fn user_config_merges_and_sans_accumulate() {
        let user = parse(
            "spec:\n  api:\n    sans: [k8s.example.internal]\n  network:\n    provider: calico\n",
        );
        let config = parse(&render(&input(Some(&user))).unwrap().text);
        assert_eq!(config["spec"]["network"]["provider"], "calico");
        let sans: Vec<&str> = config["spec"]["api"]["sans"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(sans, ["127.0.1.11", "127.0.1.12", "k8s.example.internal"]);
    }

    #[test]
    fn pull_policy_and_telemetry_are_enforced() {
        let user = parse(
            "spec:\n  images:\n    default_pull_policy: Always\n  telemetry:\n    enabled: true\n",
        );
        let rendered = render(&input(Some(&user))).unwrap();
        let config = parse(&rendered.text);
        assert_eq!(config["spec"]["images"]["default_pull_policy"], "Never");
        assert_eq!(config["spec"]["telemetry"]["enabled"], false);
        assert_eq!(rendered.overridden.len(), 2, "{:?}", rendered.overridden);
    }

    #[test]
    fn kind_is_spelled_as_k0s_expects() {
        let user = parse("apiVersion: k0s.k0sproject.io/v1beta1\nkind: clusterconfig\nspec: {}\n");
        let config = parse(&render(&input(Some(&user))).unwrap().text);
        assert_eq!(config["kind"], "ClusterConfig");
    }

    #[test]
    fn kine_storage_drops_the_etcd_peer() {
        let user = parse("spec:\n  storage:\n    type: kine\n");
        let config = parse(&render(&input(Some(&user))).unwrap().text);
        assert_eq!(config["spec"]["storage"]["type"], "kine");
        assert!(config["spec"]["storage"].get("etcd").is_none());
    }
}
