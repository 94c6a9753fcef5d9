//! The admin kubeconfig that `airlock kubeconfig` prints, rewritten as k0sctl rewrites it.

use yaml_serde::{Mapping, Value};

/// A kubeconfig that does not have the shape `k0s kubeconfig admin` prints.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("the admin kubeconfig is not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    #[error("the admin kubeconfig has no {0}")]
    Missing(&'static str),
}

/// Rewrites k0s's admin kubeconfig for use from outside the controller: the server becomes
/// `https://address:port`, and the cluster, user and context take the cluster file's names.
pub fn rewrite(
    admin: &str,
    cluster_name: &str,
    user_name: &str,
    address: &str,
    port: u16,
) -> Result<String, KubeconfigError> {
    let config: Value = yaml_serde::from_str(admin)?;
    let cluster = config["clusters"][0]["cluster"]
        .as_mapping()
        .ok_or(KubeconfigError::Missing("cluster"))?
        .clone();
    let user = config["users"][0]["user"]
        .as_mapping()
        .ok_or(KubeconfigError::Missing("user"))?
        .clone();

    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    let mut cluster = cluster;
    cluster.insert(
        Value::from("server"),
        Value::from(format!("https://{host}:{port}")),
    );

    let named = |name: &str, key: &str, body: Mapping| {
        let mut entry = Mapping::new();
        entry.insert(Value::from("name"), Value::from(name));
        entry.insert(Value::from(key), Value::Mapping(body));
        Value::Mapping(entry)
    };
    let mut context = Mapping::new();
    context.insert(Value::from("cluster"), Value::from(cluster_name));
    context.insert(Value::from("user"), Value::from(user_name));

    let mut out = Mapping::new();
    out.insert(Value::from("apiVersion"), Value::from("v1"));
    out.insert(Value::from("kind"), Value::from("Config"));
    out.insert(
        Value::from("clusters"),
        Value::Sequence(vec![named(cluster_name, "cluster", cluster)]),
    );
    out.insert(
        Value::from("contexts"),
        Value::Sequence(vec![named(cluster_name, "context", context)]),
    );
    out.insert(Value::from("current-context"), Value::from(cluster_name));
    out.insert(
        Value::from("users"),
        Value::Sequence(vec![named(user_name, "user", user)]),
    );
    Ok(yaml_serde::to_string(&Value::Mapping(out))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1
clusters:
- cluster:
    server: https://localhost:6443
    certificate-authority-data: Q0E=
  name: local
contexts:
- context:
    cluster: local
    user: user
  name: Default
current-context: Default
kind: Config
users:
- name: user
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    #[test]
    fn server_and_names_are_rewritten() {
        let text = rewrite(ADMIN, "lab", "admin", "127.0.1.11", 6443).unwrap();
        let config: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.1.11:6443"
        );
        assert_eq!(
            config["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(config["clusters"][0]["name"], "lab");
        assert_eq!(config["contexts"][0]["context"]["user"], "admin");
        assert_eq!(config["current-context"], "lab");
        assert_eq!(config["users"][0]["user"]["client-key-data"], "S0VZ");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let text = rewrite(ADMIN, "lab", "admin", "::1", 6443).unwrap();
        assert!(text.contains("https://[::1]:6443"), "{text}");
    }

    #[test]
    fn malformed_kubeconfig_is_an_error() {
        assert!(matches!(
            rewrite("kind: Config\n", "lab", "admin", "::1", 6443),
            Err(KubeconfigError::Missing("cluster"))
        ));
    }
}
