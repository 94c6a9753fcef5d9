//! The KubeVirt operator manifest from the bundle, placed as it comes except for its images. The
//! virt-operator Deployment runs the bundle's pinned virt-operator image, and its env variables
//! name the pinned operand images. virt-operator prefers those over images it derives from the
//! KubeVirt CR's `imageRegistry` and `imageTag`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::RenderError;
use super::images::{ImageRef, ImageValues};
use super::output::{Stack, Warning};

/// The env variable of virt-operator that names each operand image, by image key.
const OPERAND_ENV: [(&str, &str); 8] = [
    ("virt_operator", "VIRT_OPERATOR_IMAGE"),
    ("virt_api", "VIRT_API_IMAGE"),
    ("virt_controller", "VIRT_CONTROLLER_IMAGE"),
    ("virt_handler", "VIRT_HANDLER_IMAGE"),
    ("virt_launcher", "VIRT_LAUNCHER_IMAGE"),
    ("virt_exportproxy", "VIRT_EXPORTPROXY_IMAGE"),
    ("virt_exportserver", "VIRT_EXPORTSERVER_IMAGE"),
    (
        "virt_synchronization_controller",
        "VIRT_SYNCHRONIZATIONCONTROLLER_IMAGE",
    ),
];

/// Pins the images of the operator manifest; every other document keeps its text.
pub fn pin_operator_manifest(
    manifest: &str,
    images: &BTreeMap<String, ImageValues>,
) -> Result<String, RenderError> {
    let invalid = |reason: String| RenderError::OperatorManifest { reason };
    let operator = images
        .get("virt_operator")
        .ok_or_else(|| RenderError::Internal("the virt-operator image is not resolved".into()))?;

    let mut output = String::from(
        "# The kubevirt-operator manifest from the bundle; airlock pinned the images of the\n\
         # virt-operator Deployment to the bundle's digests and left everything else as it came.\n",
    );
    let mut found = false;
    for document in split_documents(manifest) {
        let value: Value = yaml_serde::from_str(document)
            .map_err(|e| invalid(format!("a document is not valid YAML: {e}")))?;
        if !is_operator_deployment(&value) {
            if !document.trim().is_empty() {
                output.push_str("---\n");
                output.push_str(document.trim_end());
                output.push('\n');
            }
            continue;
        }
        found = true;
        let mut deployment = value;
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .ok_or_else(|| invalid("the virt-operator Deployment has no containers".into()))?;
        let container = containers
            .iter_mut()
            .find(|container| container["name"] == "virt-operator")
            .ok_or_else(|| {
                invalid("the virt-operator Deployment has no container named virt-operator".into())
            })?;
        container["image"] = json!(operator.pinned);
        let mut env: Vec<Value> = container["env"].as_array().cloned().unwrap_or_default();
        for (key, variable) in OPERAND_ENV {
            let Some(image) = images.get(key) else {
                continue;
            };
            env.retain(|entry| entry["name"] != variable);
            env.push(json!({"name": variable, "value": image.pinned}));
        }
        container["env"] = Value::Array(env);
        let text = yaml_serde::to_string(&deployment).map_err(|e| {
            RenderError::Internal(format!("cannot write the virt-operator Deployment: {e}"))
        })?;
        output.push_str("---\n");
        output.push_str(&text);
    }
    if !found {
        return Err(invalid("it has no Deployment named virt-operator".into()));
    }
    Ok(output)
}

/// Warns when the manifest comes from another KubeVirt release than the virt-operator image
/// airlock pins, because its CRDs and RBAC are then those of the other release.
pub fn release_mismatch(manifest: &str, images: &BTreeMap<String, ImageValues>) -> Option<Warning> {
    let pinned = images.get("virt_operator")?;
    let shipped = split_documents(manifest)
        .into_iter()
        .filter_map(|document| yaml_serde::from_str::<Value>(document).ok())
        .find(is_operator_deployment)?;
    let containers = shipped["spec"]["template"]["spec"]["containers"].as_array()?;
    let image = containers
        .iter()
        .find(|container| container["name"] == "virt-operator")?["image"]
        .as_str()?;
    let shipped_tag = ImageRef::parse(image).ok()?.tag?;
    if shipped_tag == pinned.tag {
        return None;
    }
    Some(Warning {
        stack: Stack::Kubevirt,
        host: None,
        message: format!(
            "the kubevirt-operator manifest ships virt-operator {shipped_tag}, but airlock pins \
             {}, so the manifest's CRDs and RBAC may not fit the operator",
            pinned.tagged
        ),
        help: "use a bundle built by this airlock release, whose kubevirt-operator manifest \
               matches its image list"
            .to_string(),
    })
}

fn is_operator_deployment(document: &Value) -> bool {
    document["kind"] == "Deployment" && document["metadata"]["name"] == "virt-operator"
}

/// Splits a multi-document YAML text at its `---` lines.
fn split_documents(text: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&text[start..]);
    documents
        .into_iter()
        .filter(|document| {
            document
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned_operator(tag: &str) -> BTreeMap<String, ImageValues> {
        let bundle = [crate::stacks::BundleImage {
            reference: format!("quay.io/kubevirt/virt-operator:{tag}"),
            digest: crate::digest::Digest::of_bytes(tag.as_bytes()),
        }];
        let wanted = ImageRef::parse(&bundle[0].reference).unwrap();
        let (_, values) = crate::stacks::images::BundleImages::new(&bundle)
            .unwrap()
            .resolve(Stack::Kubevirt, &wanted)
            .unwrap();
        BTreeMap::from([("virt_operator".to_string(), values)])
    }

    fn manifest(tag: &str) -> String {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: virt-operator
spec:
  template:
    spec:
      containers:
        - name: virt-operator
          image: quay.io/kubevirt/virt-operator:TAG
";
        text.replace("TAG", tag)
    }

    #[test]
    fn release_mismatch_names_both_versions() {
        let warning = release_mismatch(&manifest("v1.9.1"), &pinned_operator("v1.9.0")).unwrap();
        assert_eq!(warning.stack, Stack::Kubevirt);
        assert!(warning.message.contains("v1.9.1"), "{warning}");
        assert!(
            warning
                .message
                .contains("quay.io/kubevirt/virt-operator:v1.9.0"),
            "{warning}"
        );
    }

    #[test]
    fn release_match_gives_no_warning() {
        assert_eq!(
            release_mismatch(&manifest("v1.9.0"), &pinned_operator("v1.9.0")),
            None
        );
    }

    #[test]
    fn split_documents_drops_empty_ones() {
        let text = "---\na: 1\n---\n# only a comment\n---\nb: 2\n";
        assert_eq!(split_documents(text), vec!["a: 1\n", "b: 2\n"]);
    }
}
