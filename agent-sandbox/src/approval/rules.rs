//! The policy file (`--approver rules:FILE`): decisions for unattended runs, without asking
//! anyone. A TOML file of `[[rule]]` tables, tried in order; the first whose `destination`
//! (and `exe`, `kind`, if given) matches decides. A request no rule matches is left to the
//! next backend of a chain, or refused.
//!
//! ```toml
//! [[rule]]
//! destination = "tcp 192.0.2.*:443"   # glob over the request's destination
//! exe = "/usr/bin/git"                # optional glob over its executable
//! decision = "allow"                  # or "deny"
//! scope = "sandbox"                   # optional: once (default) or sandbox
//! expires_s = 600                     # optional, for scope = "sandbox"
//! ```
//!
//! An allow rule must name a destination: `destination = "*"` would grant by program name
//! alone, which is refused when the file is read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use super::{Approver, Decision, Request, Scope};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RuleText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    destination: String,
    #[serde(default)]
    exe: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    decision: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    expires_s: Option<u64>,
}

#[derive(Debug)]
struct Rule {
    destination: GlobMatcher,
    exe: Option<GlobMatcher>,
    kind: Option<String>,
    allow: bool,
    scope: Scope,
    expires: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct RulesApprover {
    path: PathBuf,
    rules: Vec<Rule>,
}

/// `*` does not cross `/` (`**` does): in an executable's path, and in a file read's
/// destination (`read /data/**`).
fn glob(text: &str, what: &str, path: &Path, n: usize) -> anyhow::Result<GlobMatcher> {
    Ok(GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .with_context(|| format!("{}: rule {n}: {what} {text:?}", path.display()))?
        .compile_matcher())
}

impl RulesApprover {
    pub(crate) fn load(path: &Path) -> anyhow::Result<RulesApprover> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the approval rules {}", path.display()))?;
        // toml's message names the line and column.
        let file: File =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut rules = Vec::new();
        for (i, r) in file.rule.into_iter().enumerate() {
            let n = i + 1;
            let allow = match r.decision.as_str() {
                "allow" => true,
                "deny" => false,
                other => bail!(
                    "{}: rule {n}: decision {other:?}: write \"allow\" or \"deny\"",
                    path.display()
                ),
            };
            let place = ["read ", "exec ", "tcp ", "udp "]
                .iter()
                .find_map(|k| r.destination.strip_prefix(k))
                .unwrap_or(&r.destination);
            if allow
                && place
                    .chars()
                    .all(|c| matches!(c, '*' | '?' | ' ' | '/' | ':'))
            {
                bail!(
                    "{}: rule {n}: destination {:?} allows every destination; name one \
                     (e.g. \"tcp 192.0.2.7:443\"): a grant by program name alone is refused",
                    path.display(),
                    r.destination
                );
            }
            if r.scope == Scope::Workspace {
                bail!(
                    "{}: rule {n}: scope \"workspace\": the rules file is already the lasting \
                     decision; write \"once\" or \"sandbox\"",
                    path.display()
                );
            }
            if r.expires_s.is_some() && r.scope != Scope::Sandbox {
                bail!(
                    "{}: rule {n}: expires_s needs scope = \"sandbox\"",
                    path.display()
                );
            }
            rules.push(Rule {
                destination: glob(&r.destination, "destination", path, n)?,
                exe: r
                    .exe
                    .as_deref()
                    .map(|e| glob(e, "exe", path, n))
                    .transpose()?,
                kind: r.kind,
                allow,
                scope: r.scope,
                expires: r.expires_s.map(Duration::from_secs),
            });
        }
        Ok(RulesApprover {
            path: path.to_path_buf(),
            rules,
        })
    }
}

impl Approver for RulesApprover {
    fn decide(&self, request: &Request, _timeout: Duration) -> anyhow::Result<Option<Decision>> {
        let exe = request.exe.as_deref().unwrap_or("");
        let hit = self.rules.iter().enumerate().find(|(_, r)| {
            r.destination.is_match(&request.destination)
                && r.exe.as_ref().is_none_or(|g| g.is_match(exe))
                && r.kind.as_ref().is_none_or(|k| *k == request.kind)
        });
        Ok(hit.map(|(i, r)| Decision {
            allow: r.allow,
            scope: if r.allow { r.scope } else { Scope::Once },
            expires: r.expires,
            by: format!("rules {} (rule {})", self.path.display(), i + 1),
        }))
    }

    fn name(&self) -> String {
        format!("rules {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(destination: &str, exe: &str) -> Request {
        Request {
            id: 1,
            kind: "net".into(),
            destination: destination.into(),
            host: None,
            pid: 7,
            exe: Some(exe.into()),
            tree: Vec::new(),
        }
    }

    fn load(text: &str) -> anyhow::Result<RulesApprover> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("approvals.toml");
        std::fs::write(&path, text)?;
        RulesApprover::load(&path)
    }

    #[test]
    fn first_matching_rule_decides_and_no_match_abstains() {
        let rules = load(
            r#"
            [[rule]]
            destination = "tcp 192.0.2.7:443"
            exe = "/usr/bin/*"
            decision = "allow"
            scope = "sandbox"
            expires_s = 60
            [[rule]]
            destination = "tcp 192.0.2.*:*"
            decision = "deny"
            "#,
        )
        .unwrap();
        let d = rules
            .decide(
                &request("tcp 192.0.2.7:443", "/usr/bin/git"),
                Duration::ZERO,
            )
            .unwrap()
            .unwrap();
        assert!(d.allow);
        assert_eq!(d.scope, Scope::Sandbox);
        assert_eq!(d.expires, Some(Duration::from_secs(60)));
        assert!(d.by.ends_with("(rule 1)"), "{}", d.by);
        // `*` does not cross `/`: another directory's program falls to rule 2.
        let d = rules
            .decide(
                &request("tcp 192.0.2.7:443", "/usr/bin/sub/git"),
                Duration::ZERO,
            )
            .unwrap()
            .unwrap();
        assert!(!d.allow);
        assert!(d.by.ends_with("(rule 2)"), "{}", d.by);
        assert!(rules
            .decide(
                &request("tcp 198.51.100.1:443", "/usr/bin/git"),
                Duration::ZERO
            )
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_files_are_refused_with_where_and_what() {
        let e =
            load("[[rule]]\ndestination = \"*\"\nexe = \"/usr/bin/curl\"\ndecision = \"allow\"\n")
                .unwrap_err();
        assert!(format!("{e:#}").contains("program name alone"), "{e:#}");
        // Every file, or every address, is no narrower than `*`.
        for everything in ["read /**", "exec /**", "tcp *:*"] {
            let e = load(&format!(
                "[[rule]]\ndestination = \"{everything}\"\ndecision = \"allow\"\n"
            ))
            .unwrap_err();
            assert!(format!("{e:#}").contains("program name alone"), "{e:#}");
        }
        let e =
            load("[[rule]]\ndestination = \"tcp 1.2.3.4:80\"\ndecision = \"maybe\"\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("rule 1: decision \"maybe\""),
            "{e:#}"
        );
        let e =
            load("[[rule]]\ndestination = \"tcp 1.2.3.4:80\"\ndecison = \"allow\"\n").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("line 3") && e.contains("decison"), "{e}");
    }
}
