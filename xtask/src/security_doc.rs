//! `cargo xtask security-doc`: rewrites docs/security.md's VM section from the consoles the
//! last `cargo xtask vm-test` left (target/vm/console-<kernel>.log): one column per kernel,
//! one row per technique, from the guests' `agentbox-selftest-verdict:` lines.

use crate::vm::KERNELS;
use crate::{root, target_dir, Res};
use std::collections::BTreeMap;

const BEGIN: &str = "<!-- vm-verdicts: begin (cargo xtask security-doc) -->";
const END: &str = "<!-- vm-verdicts: end -->";
const MARKER: &str = "agentbox-selftest-verdict:";

pub(crate) fn security_doc() -> Res<()> {
    let mut columns = Vec::new();
    for kernel in &KERNELS {
        let path = target_dir()?
            .join("vm")
            .join(format!("console-{}.log", kernel.label));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (run `cargo xtask vm-test` first)", path.display()))?;
        columns.push((kernel.label, verdicts(&text)));
    }
    let table = render(&columns);
    let doc_path = root().join("docs/security.md");
    let doc =
        std::fs::read_to_string(&doc_path).map_err(|e| format!("{}: {e}", doc_path.display()))?;
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        return Err(format!(
            "{} has no {BEGIN} … {END} section",
            doc_path.display()
        ));
    };
    let new = format!("{}{BEGIN}\n{table}{}", &doc[..start], &doc[end..]);
    std::fs::write(&doc_path, new).map_err(|e| format!("{}: {e}", doc_path.display()))?;
    println!(
        "security-doc: rewrote the VM section of {}",
        doc_path.display()
    );
    Ok(())
}

/// technique -> "layer | result", in console order.
fn verdicts(console: &str) -> Vec<(String, String)> {
    console
        .lines()
        .filter_map(|line| line.split_once(MARKER).map(|(_, v)| v.trim()))
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
        let a = verdicts("x\ntest t ... agentbox-selftest-verdict: tiocsti | seccomp | held\n");
        let b = verdicts("agentbox-selftest-verdict: tiocsti | landlock | FAILED: why\n");
        let table = render(&[("6.1", a), ("6.12", b)]);
        assert!(
            table.contains("| tiocsti | seccomp · held | landlock · FAILED: why |"),
            "{table}"
        );
        assert!(table.contains("Linux 6.12: 1 techniques, 0 held, 0 held-not-logged, 0 not-applicable-here, 0 known-gap, 1 FAILED."), "{table}");
    }
}
