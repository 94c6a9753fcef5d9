//! The check of k0s containerd drop-ins that apply runs on GPU hosts after the GPU Operator is
//! installed.
//!
//! k0s 1.36 ships containerd 2 and refuses to start when a file in `/etc/k0s/containerd.d/`
//! declares a config `version` other than 3 or has a table under the containerd 1 plugin id
//! `io.containerd.grpc.v1.cri`. NVIDIA's container toolkit writes such a file when it reads an
//! older config, and the node then never registers, so apply reads every drop-in back.

/// The containerd 1.x CRI plugin id that containerd 2 (config version 3) no longer has.
const LEGACY_CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// The reason k0s rejects a drop-in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropInProblem {
    #[error("it is not valid TOML: {0}")]
    InvalidToml(String),
    #[error(
        "it declares containerd config version {found}; k0s 1.36 and later need version = 3 or no version"
    )]
    WrongVersion { found: String },
    #[error(
        "it has the table [plugins.\"{LEGACY_CRI_PLUGIN}\"] of containerd 1; containerd 2 splits it into \"io.containerd.cri.v1.runtime\" and \"io.containerd.cri.v1.images\""
    )]
    LegacyCriTable,
}

/// Checks one drop-in's text; `Ok` means k0s accepts it.
pub fn check_containerd_drop_in(text: &str) -> Result<(), DropInProblem> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| DropInProblem::InvalidToml(e.message().to_string()))?;

    match table.get("version") {
        None => {}
        Some(toml::Value::Integer(3)) => {}
        Some(other) => {
            return Err(DropInProblem::WrongVersion {
                found: other.to_string(),
            });
        }
    }

    let legacy = table
        .get("plugins")
        .and_then(toml::Value::as_table)
        .is_some_and(|plugins| plugins.contains_key(LEGACY_CRI_PLUGIN));
    if legacy {
        return Err(DropInProblem::LegacyCriTable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_with_version_2_is_rejected() {
        let text = "version = 2\n\n[plugins]\n";
        assert_eq!(
            check_containerd_drop_in(text),
            Err(DropInProblem::WrongVersion {
                found: "2".to_string()
            })
        );
    }

    #[test]
    fn drop_in_with_legacy_cri_table_is_rejected() {
        let text = r#"
version = 3
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
runtime_type = "io.containerd.runc.v2"
"#;
        assert_eq!(
            check_containerd_drop_in(text),
            Err(DropInProblem::LegacyCriTable)
        );
    }

    #[test]
    fn legacy_cri_table_in_dotted_form_is_rejected() {
        let text =
            "plugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"/etc/certs.d\"\n";
        assert_eq!(
            check_containerd_drop_in(text),
            Err(DropInProblem::LegacyCriTable)
        );
    }

    #[test]
    fn drop_in_with_version_3_is_accepted() {
        let text = r#"
version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
BinaryName = "/usr/local/nvidia/toolkit/nvidia-container-runtime"
"#;
        assert_eq!(check_containerd_drop_in(text), Ok(()));
    }

    #[test]
    fn drop_in_without_version_is_accepted() {
        let text = "[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/etc/k0s/containerd.d/certs.d\"\n";
        assert_eq!(check_containerd_drop_in(text), Ok(()));
        assert_eq!(check_containerd_drop_in(""), Ok(()));
    }

    #[test]
    fn version_as_string_is_rejected() {
        assert_eq!(
            check_containerd_drop_in("version = \"3\"\n"),
            Err(DropInProblem::WrongVersion {
                found: "\"3\"".to_string()
            })
        );
    }

    #[test]
    fn malformed_toml_is_reported() {
        assert!(matches!(
            check_containerd_drop_in("version = \n"),
            Err(DropInProblem::InvalidToml(_))
        ));
    }
}
