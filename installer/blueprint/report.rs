//! `report.html`: the blueprint for auditors and operators, as one self-contained page.
//!
//! The page is rendered with minijinja from `templates/blueprint/report.html.j2`, compiled into
//! the binary, with HTML auto-escaping on. It has no script and loads nothing: styles are inline
//! and the topology is an inline SVG whose layout is computed here, so the page opens offline.

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::Serialize;

use super::compliance::{Control, Outcome, Pillar};
use super::record::{Blueprint, NodeRecord};

/// The file name of the report, locally and on controllers.
pub const FILE_NAME: &str = "report.html";

const TEMPLATE_NAME: &str = "blueprint/report.html.j2";
const TEMPLATE: &str = include_str!("../../templates/blueprint/report.html.j2");

/// The report template failed; a bug in airlock, because the template is compiled in.
#[derive(Debug, thiserror::Error)]
#[error("the report template failed: {0:#}")]
pub struct ReportError(#[from] minijinja::Error);

/// The controls of one pillar.
#[derive(Serialize)]
struct PillarView<'a> {
    title: &'static str,
    controls: Vec<&'a Control>,
    passed: usize,
}

/// Renders the report.
pub fn render(blueprint: &Blueprint) -> Result<String, ReportError> {
    let mut environment = Environment::new();
    // Optional fields of the blueprint are left out when empty. A test or `or` takes them as
    // false, while printing a field that does not exist still fails.
    environment.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    environment.set_auto_escape_callback(|_| AutoEscape::Html);
    environment.add_template(TEMPLATE_NAME, TEMPLATE)?;
    environment.add_filter("bytes", |bytes: u64| crate::ui::format_bytes(bytes));

    let pillars: Vec<PillarView<'_>> = Pillar::ALL
        .iter()
        .map(|pillar| {
            let controls: Vec<&Control> = blueprint
                .compliance
                .iter()
                .filter(|control| control.pillar == *pillar)
                .collect();
            PillarView {
                title: pillar.title(),
                passed: controls
                    .iter()
                    .filter(|c| c.result == Outcome::Pass)
                    .count(),
                controls,
            }
        })
        .collect();
    let passed = blueprint
        .compliance
        .iter()
        .filter(|control| control.result == Outcome::Pass)
        .count();
    let template = environment.get_template(TEMPLATE_NAME)?;
    Ok(template.render(context! {
        blueprint => Value::from(Serde(blueprint)),
        pillars => Value::from(Serde(&pillars)),
        passed => passed,
        total => blueprint.compliance.len(),
        topology => Value::from(Serde(Topology::lay_out(&blueprint.nodes))),
    })?)
}

/// Box size and spacing of the topology picture, in SVG user units (pixels at 100 %).
const BOX_WIDTH: u32 = 180;
const BOX_HEIGHT: u32 = 66;
const GAP: u32 = 24;
const MARGIN: u32 = 16;
const ROW_GAP: u32 = 70;

/// One node in the picture.
#[derive(Debug, Serialize)]
struct NodeBox {
    x: u32,
    y: u32,
    name: String,
    role: String,
    address: String,
    controller: bool,
    workloads: bool,
    gpus: usize,
}

/// The topology picture: controllers in the top row, workers below, joined by one line that
/// stands for the cluster network.
#[derive(Debug, Serialize)]
struct Topology {
    width: u32,
    height: u32,
    box_width: u32,
    box_height: u32,
    boxes: Vec<NodeBox>,
    /// The y of the network line, and its x range.
    bus: Option<(u32, u32, u32)>,
}

impl Topology {
    fn lay_out(nodes: &[NodeRecord]) -> Topology {
        let rows: [Vec<&NodeRecord>; 2] = [
            nodes.iter().filter(|node| node.is_controller()).collect(),
            nodes.iter().filter(|node| !node.is_controller()).collect(),
        ];
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0).max(1) as u32;
        let width = 2 * MARGIN + columns * BOX_WIDTH + (columns - 1) * GAP;
        let mut boxes = Vec::new();
        let mut y = MARGIN;
        let filled: Vec<&Vec<&NodeRecord>> = rows.iter().filter(|row| !row.is_empty()).collect();
        for row in &filled {
            let count = row.len() as u32;
            let row_width = count * BOX_WIDTH + (count - 1) * GAP;
            let start = (width - row_width) / 2;
            for (index, node) in row.iter().enumerate() {
                boxes.push(NodeBox {
                    x: start + index as u32 * (BOX_WIDTH + GAP),
                    y,
                    name: node.name.clone(),
                    role: node.role.clone(),
                    address: node.label(),
                    controller: node.is_controller(),
                    workloads: node.runs_workloads(),
                    gpus: node.gpus.len(),
                });
            }
            y += BOX_HEIGHT + ROW_GAP;
        }
        let height = y - ROW_GAP + MARGIN;
        let bus = (filled.len() == 2).then(|| {
            let line_y = MARGIN + BOX_HEIGHT + ROW_GAP / 2;
            let centers = boxes.iter().map(|b| b.x + BOX_WIDTH / 2);
            let left = centers.clone().min().unwrap_or(0);
            let right = centers.max().unwrap_or(0);
            (line_y, left, right)
        });
        Topology {
            width,
            height: height.max(2 * MARGIN + BOX_HEIGHT),
            box_width: BOX_WIDTH,
            box_height: BOX_HEIGHT,
            boxes,
            bus,
        }
    }
}
