//! Rendering: resolve each stack's images against the bundle, render its templates with the
//! context, validate the files, and read back the objects for charts and readiness checks.

use std::collections::BTreeMap;

use include_dir::{Dir, include_dir};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use tracing::debug;

use super::context::Context;
use super::images::{BundleImages, ImageRef, image_list};
use super::output::{
    ChartUse, ManifestFile, PinnedImage, ReadinessCheck, Rendered, RenderedStack, Stack,
};
use super::validate::{ObjectRef, Validator};
use super::{RenderError, StackInput, hosts, kubevirt};

static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");

const READINESS: &str = "readiness.yaml.j2";

pub fn render(input: &StackInput) -> Result<Rendered, RenderError> {
    let bundle_images = BundleImages::new(&input.bundle.images)?;
    let mut context = Context::new(input, bundle_images.registries())?;
    let stacks: Vec<Stack> = Stack::ALL
        .into_iter()
        .filter(|stack| context.enabled(*stack))
        .collect();

    let mut stack_images = BTreeMap::new();
    for stack in &stacks {
        stack_images.insert(
            *stack,
            resolve_images(*stack, &mut context, &bundle_images)?,
        );
    }
    if let Some(operator) = context.images.get("virt_operator") {
        context.kubevirt.image_registry = operator.prefix.clone();
        context.kubevirt.image_tag = operator.tag.clone();
    }

    let mut crd_sources = Vec::new();
    if let Some(manifest) = &input.bundle.kubevirt_operator {
        crd_sources.push((
            "the kubevirt-operator manifest".to_string(),
            manifest.clone(),
        ));
    }
    for (index, crd) in input.bundle.crds.iter().enumerate() {
        crd_sources.push((
            format!("bundle CRD document set {}", index + 1),
            crd.clone(),
        ));
    }
    let validator = Validator::new(&input.k0s_version, &crd_sources)?;
    let charts = context.chart_paths(&input.bundle.charts);
    let environment = environment(charts.clone())?;
    let values = Value::from(Serde(&context));

    let mut rendered_stacks = Vec::new();
    for stack in stacks {
        let files = render_files(stack, &environment, &values, input, &context)?;
        let mut objects = Vec::new();
        for file in &files {
            objects.extend(validator.validate_file(stack, &file.path, file.text())?);
        }
        let charts_used = charts_used(stack, &objects, &charts, input)?;
        let readiness = render_readiness(stack, &environment, &values, &objects)?;
        debug!(stack = %stack, files = files.len(), objects = objects.len(), "rendered stack");
        rendered_stacks.push(RenderedStack {
            stack,
            files,
            charts: charts_used,
            images: stack_images.remove(&stack).unwrap_or_default(),
            readiness,
        });
    }

    let mut warnings = hosts::warnings(input, &context);
    if let (true, Some(manifest)) = (context.kubevirt.enabled, &input.bundle.kubevirt_operator) {
        warnings.extend(kubevirt::release_mismatch(manifest, &context.images));
    }
    Ok(Rendered {
        stacks: rendered_stacks,
        hosts: hosts::host_plans(input, &context),
        warnings,
    })
}

/// Evaluates the stack's image list against the context, pins each needed image from the bundle,
/// and adds its values to `context.images`.
fn resolve_images(
    stack: Stack,
    context: &mut Context,
    bundle: &BundleImages,
) -> Result<Vec<PinnedImage>, RenderError> {
    let environment = Environment::new();
    let mut pinned = Vec::new();
    for listed in image_list(stack)? {
        if let Some(condition) = &listed.when {
            let expression = environment.compile_expression(condition).map_err(|e| {
                RenderError::Internal(format!(
                    "images/{stack}.yaml: `when` of {}: {e}",
                    listed.key
                ))
            })?;
            let needed = expression
                .eval(Value::from(Serde(&*context)))
                .map_err(|e| {
                    RenderError::Internal(format!(
                        "images/{stack}.yaml: `when` of {}: {e}",
                        listed.key
                    ))
                })?;
            if !needed.is_true() {
                continue;
            }
        }
        let mut image = ImageRef::parse(&listed.reference)
            .map_err(|e| RenderError::Internal(format!("images/{stack}.yaml: {e}")))?;
        if !listed.os_suffix {
            let (pin, values) = bundle.resolve(stack, &image)?;
            pinned.push(pin);
            context.images.insert(listed.key.clone(), values);
            continue;
        }

        // The driver image: one per operating system, its tag the pinned driver version.
        let version = match context.gpu_operator.driver_version.as_str() {
            "" => image.tag.clone().unwrap_or_default(),
            version => version.to_string(),
        };
        context.gpu_operator.driver_version = version.clone();
        let mut first = None;
        for os in context.gpu_operator.driver_os.clone() {
            image.tag = Some(format!("{version}-{os}"));
            let (pin, mut values) = bundle.resolve(stack, &image)?;
            values.tag = version.clone();
            pinned.push(pin);
            first.get_or_insert(values);
        }
        if let Some(values) = first {
            context.images.insert(listed.key.clone(), values);
        }
    }
    pinned.sort();
    pinned.dedup();
    Ok(pinned)
}

/// Builds the template environment with every embedded template compiled.
fn environment(
    charts: BTreeMap<String, (String, String)>,
) -> Result<Environment<'static>, RenderError> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    // minijinja would JSON-escape every value in `*.yaml.j2`; the templates quote with `tojson`
    // where a value needs it.
    environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    environment.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    for file in template_files(&TEMPLATES) {
        if let (Some(name), Some(text)) = (file.path().to_str(), file.contents_utf8()) {
            // minijinja drops a template that does not compile, so a later render would only
            // report it missing; the compiler's message is kept here instead.
            environment
                .add_template_owned(name.to_string(), text.to_string())
                .map_err(|e| {
                    RenderError::Internal(format!("templates/{name} does not compile: {e}"))
                })?;
        }
    }
    environment.add_function("chart_archive", move |name: String| {
        charts
            .get(&name)
            .map(|(path, version)| context! { path => path, version => version })
            .ok_or_else(|| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("the bundle carries no chart named {name}"),
                )
            })
    });
    Ok(environment)
}

/// Collects every file below `dir`.
fn template_files(dir: &'static Dir<'static>) -> Vec<&'static include_dir::File<'static>> {
    let mut files: Vec<_> = dir.files().collect();
    for sub in dir.dirs() {
        files.extend(template_files(sub));
    }
    files
}

fn template_error(stack: Stack, template: &str, error: minijinja::Error) -> RenderError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    RenderError::Template {
        stack,
        template: template.to_string(),
        message,
    }
}

fn render_template(
    stack: Stack,
    environment: &Environment<'static>,
    name: &str,
    values: Value,
) -> Result<String, RenderError> {
    let template = environment
        .get_template(name)
        .map_err(|e| template_error(stack, name, e))?;
    template
        .render(values)
        .map_err(|e| template_error(stack, name, e))
}

/// Returns whether rendered text contains anything besides blank lines and comments.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---"
    })
}

fn render_files(
    stack: Stack,
    environment: &Environment<'static>,
    values: &Value,
    input: &StackInput,
    context: &Context,
) -> Result<Vec<ManifestFile>, RenderError> {
    let mut files = Vec::new();
    let folder = stack.name();

    if stack == Stack::Kubevirt {
        let manifest = input
            .bundle
            .kubevirt_operator
            .as_deref()
            .ok_or(RenderError::MissingOperatorManifest)?;
        let pinned = kubevirt::pin_operator_manifest(manifest, &context.images)?;
        files.push(ManifestFile::new(
            format!("{folder}/kubevirt-operator.yaml"),
            pinned.into_bytes(),
        ));
    }

    if stack == Stack::Tenants {
        let name = format!("{folder}/tenant.yaml.j2");
        for tenant in &context.tenants {
            let tenant_values = context! { tenant => Value::from(Serde(tenant)), ..values.clone() };
            let text = render_template(stack, environment, &name, tenant_values)?;
            files.push(ManifestFile::new(
                format!("{folder}/tenant-{}.yaml", tenant.name),
                text.into_bytes(),
            ));
        }
        return Ok(files);
    }

    let stack_dir = TEMPLATES
        .get_dir(folder)
        .ok_or_else(|| RenderError::Internal(format!("templates/{folder} is missing")))?;
    let mut names: Vec<String> = stack_dir
        .files()
        .filter_map(|file| file.path().to_str().map(String::from))
        .filter(|name| name.ends_with(".yaml.j2") && !name.ends_with(READINESS))
        .collect();
    names.sort();
    for name in names {
        let text = render_template(stack, environment, &name, values.clone())?;
        if !has_content(&text) {
            continue;
        }
        let file_name = name
            .rsplit('/')
            .next()
            .unwrap_or(&name)
            .trim_end_matches(".j2");
        files.push(ManifestFile::new(
            format!("{folder}/{file_name}"),
            text.into_bytes(),
        ));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Finds the chart archives that the stack's Chart objects name.
fn charts_used(
    stack: Stack,
    objects: &[ObjectRef],
    charts: &BTreeMap<String, (String, String)>,
    input: &StackInput,
) -> Result<Vec<ChartUse>, RenderError> {
    let mut used = Vec::new();
    for object in objects.iter().filter(|object| object.kind == "Chart") {
        let path = object.value["spec"]["chartName"]
            .as_str()
            .unwrap_or_default();
        let chart = input
            .bundle
            .charts
            .iter()
            .find(|chart| {
                charts
                    .get(&chart.name)
                    .is_some_and(|(known, _)| known == path)
            })
            .ok_or_else(|| RenderError::ChartNotInBundle {
                stack,
                name: path.to_string(),
            })?;
        used.push(ChartUse {
            name: chart.name.clone(),
            version: chart.version.clone(),
            archive: chart.archive.clone(),
            path: path.to_string(),
        });
    }
    Ok(used)
}

fn render_readiness(
    stack: Stack,
    environment: &Environment<'static>,
    values: &Value,
    objects: &[ObjectRef],
) -> Result<Vec<ReadinessCheck>, RenderError> {
    let name = format!("{}/{READINESS}", stack.name());
    let with_objects = context! { objects => Value::from(Serde(objects)), ..values.clone() };
    let text = render_template(stack, environment, &name, with_objects)?;
    if !has_content(&text) {
        return Ok(Vec::new());
    }
    yaml_serde::from_str(&text)
        .map_err(|e| RenderError::Internal(format!("templates/{name} renders invalid checks: {e}")))
}
