//! `cargo xtask security-doc`: rewrites docs/security.md's VM section from the consoles the
//! last `cargo xtask vm-test` left (target/vm/console-<kernel>.log): one column per kernel and
//! configuration (root; nobody with user namespaces disabled), one row per technique, from the
//! guests' `agentbox-selftest-verdict:` lines; and the guests' `agentbox doctor` reports, into
//! docs/security.md and the README.

use crate::vm::KERNELS;
use crate::{root, target_dir, Res};
use std::collections::BTreeMap;

const BEGIN: &str = "<!-- vm-verdicts: begin (cargo xtask security-doc) -->";
const END: &str = "<!-- vm-verdicts: end -->";
const DOCTOR_BEGIN: &str = "<!-- vm-doctor: begin (cargo xtask security-doc) -->";
const DOCTOR_END: &str = "<!-- vm-doctor: end -->";
const MARKER: &str = "agentbox-selftest-verdict";
const DOCTOR_MARKER: &str = "agentbox-doctor";
/// The guest's configurations: the label its lines carry, and how a column names it.
const CONFIGS: [(&str, &str); 2] = [
    ("", "as root"),
    ("nouserns", "no user namespaces, as nobody"),
];

pub(crate) fn security_doc() -> Res<()> {
    let mut columns = Vec::new();
    let mut doctors = Vec::new();
    for kernel in &KERNELS {
        let path = target_dir()?
            .join("vm")
            .join(format!("console-{}.log", kernel.label));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (run `cargo xtask vm-test` first)", path.display()))?;
        for (label, name) in CONFIGS {
            let found = verdicts(&text, label);
            if !found.is_empty() {
                columns.push((format!("{}, {name}", kernel.label), found));
            }
            let report = doctor(&text, if label.is_empty() { "root" } else { label });
            if !report.is_empty() {
                doctors.push((format!("Linux {}, {name}", kernel.label), report));
            }
        }
    }
    let labels: Vec<(&str, Vec<(String, String)>)> = columns
        .iter()
        .map(|(l, v)| (l.as_str(), v.clone()))
        .collect();
    let doctor_block = render_doctors(&doctors);
    replace_block(
        &root().join("docs/security.md"),
        &[
            (BEGIN, END, &render(&labels)),
            (DOCTOR_BEGIN, DOCTOR_END, &doctor_block),
        ],
    )?;
    replace_block(
        &root().join("README.md"),
        &[(DOCTOR_BEGIN, DOCTOR_END, &doctor_block)],
    )?;
    Ok(())
}

/// Replaces each `begin … end` section of the file at `path` with its new text.
fn replace_block(path: &std::path::Path, blocks: &[(&str, &str, &str)]) -> Res<()> {
    let mut doc = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (begin, end, text) in blocks {
        let (Some(start), Some(stop)) = (doc.find(begin), doc.find(end)) else {
            return Err(format!("{} has no {begin} … {end} section", path.display()));
        };
        doc = format!("{}{begin}\n{text}{}", &doc[..start], &doc[stop..]);
    }
    std::fs::write(path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("security-doc: rewrote {}", path.display());
    Ok(())
}

/// The doctor report a guest printed with `label`.
fn doctor(console: &str, label: &str) -> String {
    let marker = format!("{DOCTOR_MARKER}[{label}]: ");
    console
        .lines()
        .filter_map(|line| line.split_once(&marker).map(|(_, l)| l.trim_end()))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn render_doctors(doctors: &[(String, String)]) -> String {
    doctors
        .iter()
        .map(|(name, report)| {
            format!(
                "<details><summary><code>agentbox doctor</code> on {name}</summary>\n\n\
                 ```text\n{report}```\n\n</details>\n\n"
            )
        })
        .collect()
}

/// technique -> "layer | result", in console order.
fn verdicts(console: &str, label: &str) -> Vec<(String, String)> {
    let marker = if label.is_empty() {
        format!("{MARKER}:")
    } else {
        format!("{MARKER}[{label}]:")
    };
    console
        .lines()
        .filter_map(|line| line.split_once(&marker).map(|(_, v)| v.trim()))
        .filter_map(|v| {
            let (technique, rest) = v.split_once(" | ")?;
            Some((technique.trim().to_string(), rest.trim().to_string()))
        })
        .collect()
}

fn render(columns: &[(&str, Vec<(String, String)>)]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, usize), String> = BTreeMap::new();
    for (i, (_, verdicts)) in columns.iter().enumerate() {
        for (technique, verdict) in verdicts {
            if !order.contains(technique) {
                order.push(technique.clone());
            }
            cells.insert((technique.clone(), i), verdict.replace('|', "·"));
        }
    }
    let mut out = String::new();
    for (label, verdicts) in columns {
        let count = |prefix: &str| {
            verdicts
                .iter()
                .filter(|(_, v)| {
                    v.split_once(" | ")
                        .map_or(v.as_str(), |(_, r)| r)
                        .starts_with(prefix)
                })
                .count()
        };
        out.push_str(&format!(
            "Linux {label}: {} techniques, {} held, {} held-not-logged, {} not-applicable-here, {} known-gap, {} FAILED.\n\n",
            verdicts.len(),
            count("held") - count("held-not-logged"),
            count("held-not-logged"),
            count("not-applicable-here"),
            count("known-gap"),
            count("FAILED"),
        ));
    }
    out.push_str("| technique |");
    for (label, _) in columns {
        out.push_str(&format!(" Linux {label}: layer · result |"));
    }
    out.push_str("\n| --- |");
    for _ in columns {
        out.push_str(" --- |");
    }
    out.push('\n');
    for technique in &order {
        out.push_str(&format!("| {technique} |"));
        for i in 0..columns.len() {
            let cell = cells
                .get(&(technique.clone(), i))
                .map_or("not run", String::as_str);
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines_become_one_row_per_technique() {
        let console = "x\ntest t ... agentbox-selftest-verdict: tiocsti | seccomp | held\n\
                       agentbox-selftest-verdict[nouserns]: tiocsti | landlock | FAILED: why\n";
        let a = verdicts(console, "");
        let b = verdicts(console, "nouserns");
        assert_eq!((a.len(), b.len()), (1, 1));
        let table = render(&[("6.1", a), ("6.12", b)]);
        assert!(
            table.contains("| tiocsti | seccomp · held | landlock · FAILED: why |"),
            "{table}"
        );
        assert!(table.contains("Linux 6.12: 1 techniques, 0 held, 0 held-not-logged, 0 not-applicable-here, 0 known-gap, 1 FAILED."), "{table}");
    }
}
