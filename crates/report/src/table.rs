//! The report as a human reads it: one line per workload image, aligned like `kubectl get`,
//! then what the policy would deny and a summary.

use std::fmt::Write;

use crate::{Report, RunsFrom};

const HEADER: [&str; 8] = [
    "NAMESPACE",
    "WORKLOAD",
    "CONTAINER",
    "IMAGE",
    "PODS",
    "MIRROR",
    "RUNS FROM",
    "WOULD DENY",
];

pub fn render_table(report: &Report) -> String {
    let mut lines: Vec<[String; 8]> = vec![HEADER.map(str::to_owned)];
    for row in &report.rows {
        let denied: Vec<&str> = row.would_deny.iter().map(|d| d.rule).collect();
        lines.push([
            row.namespace.clone(),
            row.workload.clone(),
            row.container.clone(),
            row.image.clone(),
            row.pods.to_string(),
            row.state.as_str().to_owned(),
            match row.runs_from {
                RunsFrom::Source => "source",
                RunsFrom::Mirror => "mirror",
            }
            .to_owned(),
            if denied.is_empty() {
                "-".to_owned()
            } else {
                denied.join(",")
            },
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    let details: Vec<String> = report
        .rows
        .iter()
        .flat_map(|row| {
            let note = row.note.iter().map(move |note| {
                format!("  {}/{} {}: {note}", row.namespace, row.workload, row.image)
            });
            let denials = row.would_deny.iter().map(move |d| {
                format!(
                    "  {}/{} {}: would be denied: {} (policy {})",
                    row.namespace, row.workload, row.image, d.problem, d.rule
                )
            });
            note.chain(denials)
        })
        .collect();
    if !details.is_empty() {
        out.push_str("\nNotes:\n");
        for line in details {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let states: Vec<String> = report
        .images_by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} images ({}); {} workloads would be denied",
        report.images_by_state.values().sum::<usize>(),
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        },
        report.workloads_denied.len()
    );
    for rule in &report.not_judged {
        let _ = writeln!(out, "not judged: policy {rule} (it needs the registry)");
    }
    out
}
