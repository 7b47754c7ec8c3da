//! Reports for CI from one run's records: JUnit XML, SARIF 2.1.0 and a Markdown summary.
//!
//! Each is a view of the audit log, which stays the source of truth: the guarantees of the
//! launch record, the denials grouped by (layer, rule) with their count and first objects,
//! the exit. Hand-written: the three formats need a few elements each, and an XML or SARIF
//! crate would add dependencies to the security-critical binary for string building.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::event::{Action, Denial, Event, GuaranteeState, Object, Record};

/// The objects a report names per rule at most (the log has them all).
const EXAMPLES: usize = 5;

/// One run, as the reports see it.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub sandbox: String,
    pub profile: String,
    pub command: Vec<String>,
    pub guarantees: Vec<GuaranteeState>,
    /// Denials by (layer, rule), in first-seen order.
    pub rules: Vec<RuleDenials>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub lost: u64,
}

/// Every denial of one rule.
#[derive(Debug, Clone)]
pub struct RuleDenials {
    pub layer: String,
    pub rule: String,
    pub count: u64,
    /// Up to `EXAMPLES` distinct objects, as the terminal shows them.
    pub objects: Vec<String>,
    /// Paths of file objects, for SARIF locations.
    pub paths: Vec<String>,
    /// Any of them denied (not only audited).
    pub enforced: bool,
}

impl RunSummary {
    pub fn from_records(records: &[Record]) -> RunSummary {
        let mut summary = RunSummary::default();
        let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
        for rec in records {
            summary.sandbox.clone_from(&rec.sandbox);
            match &rec.event {
                Event::Launch {
                    profile,
                    command,
                    guarantees,
                    ..
                } => {
                    summary.profile.clone_from(profile);
                    summary.command.clone_from(command);
                    summary.guarantees.clone_from(guarantees);
                }
                Event::Denial(d) => summary.add(&mut index, d),
                Event::Loss { count, .. } => summary.lost += count,
                Event::Exit {
                    code,
                    signal,
                    duration_ms,
                    ..
                } => {
                    summary.code = *code;
                    summary.signal = *signal;
                    summary.duration_ms = *duration_ms;
                }
                _ => {}
            }
        }
        summary
    }

    fn add(&mut self, index: &mut BTreeMap<(String, String), usize>, d: &Denial) {
        let key = (d.layer.clone(), d.rule.clone());
        let at = *index.entry(key).or_insert_with(|| {
            self.rules.push(RuleDenials {
                layer: d.layer.clone(),
                rule: d.rule.clone(),
                count: 0,
                objects: Vec::new(),
                paths: Vec::new(),
                enforced: false,
            });
            self.rules.len() - 1
        });
        let entry = &mut self.rules[at];
        entry.count += 1;
        entry.enforced |= d.action != Action::Audited;
        let shown = super::terminal::object_text(&d.object);
        if entry.objects.len() < EXAMPLES && !entry.objects.contains(&shown) {
            entry.objects.push(shown);
        }
        if let Object::Path { path, .. } | Object::Exec { path } = &d.object {
            if entry.paths.len() < EXAMPLES && !entry.paths.contains(path) {
                entry.paths.push(path.clone());
            }
        }
    }

    pub fn denials(&self) -> u64 {
        self.rules.iter().map(|r| r.count).sum()
    }

    fn exit_text(&self) -> String {
        super::terminal::exit_status(self.code, self.signal)
    }
}

/// A stable id for a rule: its layer and the rule text up to the first variable part,
/// lower case, `-` for anything else (`landlock/filesystem-not-in-allow-list`).
pub fn rule_id(layer: &str, rule: &str) -> String {
    let head = rule
        .split(['(', ';'])
        .next()
        .unwrap_or(rule)
        .split(" /")
        .next()
        .unwrap_or(rule);
    let mut slug = String::new();
    for c in head.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    format!("{layer}/{}", slug.trim_matches('-'))
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no escape for most control characters: they are left out.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: a suite of guarantees (skipped when not enforced here, with the reason), a
/// suite of denied rules (each a failure naming its count and first objects), and the
/// command's own exit.
pub fn junit(run: &RunSummary) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let denied = run.rules.iter().filter(|r| r.enforced).count();
    let failed_exit = usize::from(run.code != Some(0));
    let tests = run.guarantees.len() + run.rules.len() + 1;
    let _ = writeln!(
        out,
        "<testsuites name=\"agentbox\" tests=\"{tests}\" failures=\"{}\" time=\"{:.3}\">",
        denied + failed_exit,
        run.duration_ms as f64 / 1000.0
    );
    let skipped = run.guarantees.iter().filter(|g| !g.enforced).count();
    let _ = writeln!(
        out,
        "  <testsuite name=\"agentbox.guarantees\" tests=\"{}\" failures=\"0\" skipped=\"{skipped}\">",
        run.guarantees.len()
    );
    for g in &run.guarantees {
        let name = xml(&serde_name(&g.guarantee));
        if g.enforced {
            let _ = writeln!(
                out,
                "    <testcase classname=\"agentbox.guarantee\" name=\"{name}\"/>"
            );
        } else {
            let _ = writeln!(
                out,
                "    <testcase classname=\"agentbox.guarantee\" name=\"{name}\">\
                 <skipped message=\"{}\"/></testcase>",
                xml(g.reason.as_deref().unwrap_or("not enforced here"))
            );
        }
    }
    out.push_str("  </testsuite>\n");
    let _ = writeln!(
        out,
        "  <testsuite name=\"agentbox.denials\" tests=\"{}\" failures=\"{denied}\">",
        run.rules.len()
    );
    for r in &run.rules {
        let _ = write!(
            out,
            "    <testcase classname=\"agentbox.denial.{}\" name=\"{}\">",
            xml(&r.layer),
            xml(&r.rule)
        );
        let message = format!("{} denial(s): {}", r.count, r.objects.join("; "));
        if r.enforced {
            let _ = write!(
                out,
                "<failure type=\"{}\" message=\"{}\">{}</failure>",
                xml(&rule_id(&r.layer, &r.rule)),
                xml(&message),
                xml(&r.objects.join("\n"))
            );
        } else {
            let _ = write!(out, "<system-out>{}</system-out>", xml(&message));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n");
    out.push_str("  <testsuite name=\"agentbox.command\" tests=\"1\"");
    let _ = writeln!(out, " failures=\"{failed_exit}\">");
    let _ = write!(
        out,
        "    <testcase classname=\"agentbox.command\" name=\"{}\">",
        xml(&run.command.join(" "))
    );
    if failed_exit == 1 {
        let _ = write!(out, "<failure message=\"{}\"/>", xml(&run.exit_text()));
    }
    out.push_str("</testcase>\n  </testsuite>\n</testsuites>\n");
    out
}

fn serde_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// SARIF 2.1.0: one rule per (layer, rule), one result per denied rule, with a location for
/// each denied file inside `workspace` (relative to `%SRCROOT%`, the workspace).
pub fn sarif(run: &RunSummary, workspace: &Path) -> String {
    let mut rules = Vec::new();
    let mut results = Vec::new();
    for r in &run.rules {
        let id = rule_id(&r.layer, &r.rule);
        if !rules.iter().any(|v: &serde_json::Value| v["id"] == id) {
            rules.push(serde_json::json!({
                "id": id,
                "name": r.layer,
                "shortDescription": { "text": r.rule },
                "helpUri": "https://github.com/agentbox/agentbox/blob/main/docs/events.md",
            }));
        }
        let locations: Vec<serde_json::Value> = r
            .paths
            .iter()
            // Relative paths are the agent's own, from its working directory: the workspace.
            .filter_map(|p| {
                let p = Path::new(p);
                if p.is_relative() {
                    Some(p)
                } else {
                    p.strip_prefix(workspace).ok()
                }
            })
            .map(|rel| {
                serde_json::json!({
                    "physicalLocation": {
                        "artifactLocation": {
                            "uri": rel.to_string_lossy(),
                            "uriBaseId": "%SRCROOT%",
                        }
                    }
                })
            })
            .collect();
        results.push(serde_json::json!({
            "ruleId": id,
            "level": if r.enforced { "error" } else { "warning" },
            "message": {
                "text": format!("{} denial(s) by {}: {}: {}", r.count, r.layer, r.rule, r.objects.join("; "))
            },
            "locations": locations,
            "properties": { "count": r.count, "sandbox": run.sandbox },
        }));
    }
    let root = format!("{}/", workspace.display());
    let doc = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "agentbox",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/agentbox/agentbox",
                "rules": rules,
            }},
            "originalUriBaseIds": { "%SRCROOT%": { "uri": format!("file://{root}") } },
            "results": results,
            "invocations": [{
                "executionSuccessful": run.code == Some(0),
                "commandLine": run.command.join(" "),
                "exitCode": run.code,
            }],
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn md(text: &str) -> String {
    super::terminal::sanitize(&text.replace(['\n', '\r'], " "))
        .replace('|', "\\|")
        .replace('`', "'")
}

/// A Markdown summary that fits a CI job summary: the exit, the denials by rule, and which
/// guarantees held.
pub fn markdown(run: &RunSummary, log: &Path) -> String {
    let mut out = String::new();
    let denials = run.denials();
    let _ = writeln!(
        out,
        "### agentbox: `{}` — {}, {} denial{}\n",
        md(&run.command.join(" ")),
        run.exit_text(),
        denials,
        if denials == 1 { "" } else { "s" }
    );
    if !run.rules.is_empty() {
        out.push_str("| layer | rule | count | objects |\n| --- | --- | --- | --- |\n");
        for r in &run.rules {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                md(&r.layer),
                md(&r.rule),
                r.count,
                md(&r.objects.join("; "))
            );
        }
        out.push('\n');
    }
    if run.lost > 0 {
        let _ = writeln!(out, "**{} events lost** (counted in the log).\n", run.lost);
    }
    let missing: Vec<&GuaranteeState> = run.guarantees.iter().filter(|g| !g.enforced).collect();
    let _ = writeln!(
        out,
        "Profile `{}`: {} of {} guarantees enforced here.",
        md(&run.profile),
        run.guarantees.len() - missing.len(),
        run.guarantees.len()
    );
    if !missing.is_empty() {
        out.push_str("\n<details><summary>not enforced here</summary>\n\n");
        for g in missing {
            let _ = writeln!(
                out,
                "- `{}`: {}",
                serde_name(&g.guarantee),
                md(g.reason.as_deref().unwrap_or(""))
            );
        }
        out.push_str("\n</details>\n");
    }
    let _ = writeln!(
        out,
        "\nAudit log: `{}` (sandbox `{}`; `agentbox audit verify` checks it).",
        md(&log.display().to_string()),
        run.sandbox
    );
    out
}

/// OCSF 1.1 events, one JSON object per line: denials of files and execs as File System
/// Activity (1001), of network destinations and sockets as Network Activity (4001), of
/// syscalls, signals and losses as Detection Finding (2004), execs and exits as Process
/// Activity (1007). The mapping is docs/events.md's "OCSF" section.
pub fn ocsf(records: &[Record]) -> String {
    let mut out = String::new();
    for rec in records {
        if let Some(event) = ocsf_event(rec) {
            out.push_str(&event.to_string());
            out.push('\n');
        }
    }
    out
}

/// Where `run --log-format ocsf` streams a log's events: `RUN.jsonl` → `RUN.ocsf.jsonl`.
pub fn ocsf_path(log: &Path) -> std::path::PathBuf {
    let stem = log.file_stem().unwrap_or_default().to_string_lossy();
    log.with_file_name(format!("{stem}.ocsf.jsonl"))
}

/// Streams OCSF events to a file as the run writes its log (`agentbox run --log-format
/// ocsf`), for a SIEM agent tailing it; the hash-chained log stays the record.
#[derive(Debug)]
pub struct OcsfSink {
    out: std::io::BufWriter<std::fs::File>,
}

impl OcsfSink {
    /// Creates `path` (it must not exist yet, like the log).
    pub fn create(path: &Path) -> std::io::Result<OcsfSink> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(OcsfSink {
            out: std::io::BufWriter::new(file),
        })
    }
}

impl super::Sink for OcsfSink {
    fn record(&mut self, rec: &Record, _line: &str) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(event) = ocsf_event(rec) {
            writeln!(self.out, "{event}")?;
            self.out.flush()?;
        }
        Ok(())
    }
}

fn ocsf_time(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn ocsf_event(rec: &Record) -> Option<serde_json::Value> {
    use serde_json::json;
    let base = |class_uid: u32, category_uid: u32, activity_id: u32, severity_id: u32| {
        json!({
            "class_uid": class_uid,
            "category_uid": category_uid,
            "activity_id": activity_id,
            "type_uid": u64::from(class_uid) * 100 + u64::from(activity_id),
            "severity_id": severity_id,
            "time": ocsf_time(&rec.ts),
            "metadata": {
                "version": "1.1.0",
                "product": { "name": "agentbox", "vendor_name": "agentbox",
                             "version": env!("CARGO_PKG_VERSION") },
                "uid": format!("{}-{}", rec.sandbox, rec.seq),
                "correlation_uid": rec.sandbox,
            },
        })
    };
    let actor = |pid: i32, exe: &Option<String>| json!({ "process": { "pid": pid, "file": { "path": exe.clone().unwrap_or_default() } } });
    let merge = |mut a: serde_json::Value, b: serde_json::Value| {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
        a
    };
    match &rec.event {
        Event::Denial(d) => {
            // Blocked (2) when denied or killed, Allowed (1) for an audit-mode record.
            let (status_id, disposition_id) = match d.action {
                Action::Audited => (1, 1),
                _ => (2, 2),
            };
            let common = json!({
                "actor": actor(d.pid, &d.exe),
                "status_id": status_id,
                "disposition_id": disposition_id,
                "message": d.rule,
                "unmapped": { "agentbox_layer": d.layer, "agentbox_rule": d.rule },
            });
            let specific = match &d.object {
                Object::Path { path, access, .. } => {
                    let activity = match access.as_str() {
                        "create" | "path_mknod" | "inode_create" | "path_mkdir" => 1,
                        "open" | "file_open" | "watch" => 2,
                        "unlink" | "path_unlink" => 4,
                        "rename" | "path_rename" => 5,
                        "truncate" | "inode_setattr" | "chmod" | "chown" | "utime" => 3,
                        _ => 99,
                    };
                    merge(
                        base(1001, 1, activity, 3),
                        json!({ "file": { "path": path } }),
                    )
                }
                Object::Exec { path } => merge(
                    base(1001, 1, 99, 3),
                    json!({ "file": { "path": path }, "activity_name": "Execute" }),
                ),
                // OCSF DNS Activity, a query.
                Object::Dns { name, qtype } => merge(
                    base(4003, 4, 1, 3),
                    json!({ "query": { "hostname": name, "type": qtype } }),
                ),
                Object::Net { proto, addr, port } => merge(
                    base(4001, 4, 1, 3),
                    json!({
                        "dst_endpoint": { "ip": addr, "port": port },
                        "connection_info": { "protocol_name": proto },
                    }),
                ),
                Object::Unix { path, resolved, .. } => merge(
                    base(4001, 4, 1, 3),
                    json!({
                        "dst_endpoint": { "name": resolved.clone().unwrap_or(path.clone()) },
                        "connection_info": { "protocol_name": "unix" },
                    }),
                ),
                Object::Socket { family, sock_type } => merge(
                    base(4001, 4, 1, 3),
                    json!({ "unmapped": { "socket_family": family, "socket_type": sock_type } }),
                ),
                Object::Syscall { .. } | Object::Signal { .. } => merge(
                    base(2004, 2, 1, 3),
                    json!({ "finding_info": { "title": d.rule, "uid": rule_id(&d.layer, &d.rule),
                                              "desc": super::terminal::object_text(&d.object) } }),
                ),
            };
            Some(merge(specific, common))
        }
        Event::Process(p) if !p.thread => {
            let activity = match p.kind {
                super::event::ProcessKind::Exec => 1,
                super::event::ProcessKind::Exit => 2,
                _ => return None,
            };
            Some(merge(
                base(1007, 1, activity, 1),
                json!({
                    "process": { "pid": p.pid, "file": { "path": p.exe.clone().unwrap_or_default() } },
                    "actor": { "process": { "pid": p.ppid.unwrap_or(0) } },
                    "exit_code": p.code,
                }),
            ))
        }
        Event::Loss {
            source,
            kind,
            count,
        } => Some(merge(
            base(2004, 2, 1, 4),
            json!({ "finding_info": { "title": format!("{count} {kind} events lost"),
                                      "uid": format!("agentbox/loss/{source}") } }),
        )),
        Event::Anomaly { detail } => Some(merge(
            base(2004, 2, 1, 4),
            json!({ "finding_info": { "title": detail, "uid": "agentbox/anomaly" } }),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_stable_slugs() {
        assert_eq!(
            rule_id("landlock", "filesystem: not in allow-list"),
            "landlock/filesystem-not-in-allow-list"
        );
        assert_eq!(
            rule_id(
                "seccomp",
                "network.unix: not in the write trees or network.unix (/run/x)"
            ),
            "seccomp/network-unix-not-in-the-write-trees-or-network-unix"
        );
        assert_eq!(
            rule_id("mounts", "filesystem.protect: read-only bind mount"),
            "mounts/filesystem-protect-read-only-bind-mount"
        );
    }

    #[test]
    fn xml_text_is_escaped_and_controls_dropped() {
        assert_eq!(
            xml("a<b & \"c\"\u{1b}]0;x"),
            "a&lt;b &amp; &quot;c&quot;]0;x"
        );
    }
}
