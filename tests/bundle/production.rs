//! The production specification `bundles/sovereign-ai.yaml`. It names upstream URLs, chart
//! repositories and registries, so the tests only parse it: nothing here opens a connection.

use std::collections::HashSet;
use std::path::PathBuf;

use airlock::bundle::spec::{BundleSpec, Source};
use airlock::stacks::{ImageRef, Stack, image_list};

fn production_spec() -> BundleSpec {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bundles/sovereign-ai.yaml");
    BundleSpec::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn production_spec_parses() {
    let spec = production_spec();
    assert_eq!(spec.name, "sovereign-ai");
    assert_eq!(spec.k0s.version, "v1.36.3+k0s.0");
    assert!(
        spec.plain_http.is_empty(),
        "production downloads use HTTPS only"
    );

    let k0s = spec.artifacts.iter().find(|a| a.name == "k0s").unwrap();
    let Source::Url(url) = &k0s.source else {
        panic!("the k0s binary comes from its release URL");
    };
    assert!(url.contains(&spec.k0s.version), "{url}");
}

#[test]
fn production_spec_carries_every_listed_image() {
    let spec = production_spec();
    let mut stacks_in_spec = HashSet::new();
    for stack in &spec.stacks {
        let known = Stack::from_name(&stack.name)
            .unwrap_or_else(|| panic!("stack {} is not one airlock renders", stack.name));
        stacks_in_spec.insert(known);
        let carried: HashSet<String> = stack
            .images
            .iter()
            .map(|image| ImageRef::parse(&image.reference).unwrap().tagged())
            .collect();
        for listed in image_list(known).unwrap() {
            let wanted = ImageRef::parse(&listed.reference).unwrap().tagged();
            if listed.os_suffix {
                let prefix = format!("{wanted}-");
                assert!(
                    carried.iter().any(|image| image.starts_with(&prefix)),
                    "{}: no {prefix}<os> image",
                    stack.name
                );
            } else {
                assert!(
                    carried.contains(&wanted),
                    "{}: {wanted} is missing",
                    stack.name
                );
            }
        }
        for image in &stack.images {
            assert_eq!(image.source, Source::Image(image.reference.clone()));
        }
    }
    for stack in [
        Stack::Kubevirt,
        Stack::GpuOperator,
        Stack::Observability,
        Stack::Policy,
    ] {
        assert!(stacks_in_spec.contains(&stack), "{stack} is missing");
    }
}

#[test]
fn production_spec_names_the_charts_the_templates_use() {
    let spec = production_spec();
    let charts: HashSet<&str> = spec
        .stacks
        .iter()
        .flat_map(|stack| &stack.artifacts)
        .filter(|artifact| artifact.kind.as_str() == "chart")
        .map(|artifact| artifact.name.as_str())
        .collect();
    for chart in [
        "gpu-operator",
        "kube-prometheus-stack",
        "loki",
        "opentelemetry-collector",
        "local-path-provisioner",
        "kyverno",
    ] {
        assert!(charts.contains(chart), "{chart} is missing");
    }
    let remote = spec
        .artifacts
        .iter()
        .chain(spec.stacks.iter().flat_map(|stack| &stack.artifacts))
        .filter(|artifact| artifact.source.is_remote());
    for artifact in remote {
        assert!(
            artifact.digest.is_none(),
            "{}: pins belong in the lock file",
            artifact.name
        );
        match &artifact.source {
            Source::Url(url) => assert!(url.starts_with("https://"), "{url}"),
            Source::Chart(chart) => assert!(chart.repo.starts_with("https://"), "{}", chart.repo),
            other => panic!("{}: unexpected source {other:?}", artifact.name),
        }
    }
}
