//! `agentbox profile diff OLD NEW`: what a change to a profile changes, entry by entry, on
//! the fully resolved profiles (extends applied), for review in a pull request. Both are
//! compared in the form `profile show` prints, so entries read as a profile writes them.

use crate::policy::Policy;

/// One line per difference, sorted by section: `+ network.allow "pypi.org:443"`,
/// `- filesystem.write "~/.cache"`, `~ process.share_tty false -> true`. Empty: the two
/// enforce the same.
pub fn diff(old: &Policy, new: &Policy) -> Vec<String> {
    let table = |p: &Policy| -> toml::Table {
        // The name differs whenever the files do and enforces nothing.
        let mut p = p.clone();
        p.name = String::new();
        let text = super::to_toml(&p, None, &[]);
        toml::from_str(&text).expect("a rendered profile parses")
    };
    let mut out = Vec::new();
    walk("", &table(old), &table(new), &mut out);
    out
}

fn walk(at: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => walk(&path, a, b, out),
            (Some(toml::Value::Array(a)), Some(toml::Value::Array(b))) => {
                out.extend(
                    b.iter()
                        .filter(|v| !a.contains(v))
                        .map(|v| format!("+ {path} {v}")),
                );
                out.extend(
                    a.iter()
                        .filter(|v| !b.contains(v))
                        .map(|v| format!("- {path} {v}")),
                );
            }
            (Some(toml::Value::Array(a)), None) => {
                out.extend(a.iter().map(|v| format!("- {path} {v}")));
            }
            (None, Some(toml::Value::Array(b))) => {
                out.extend(b.iter().map(|v| format!("+ {path} {v}")));
            }
            (Some(a), Some(b)) if a != b => out.push(format!("~ {path} {a} -> {b}")),
            (Some(a), None) => out.push(format!("- {path} {a}")),
            (None, Some(b)) => out.push(format!("+ {path} {b}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named_entry_by_entry() {
        let opts = crate::profile::LoadOptions {
            home: "/home/u".into(),
            workspace: "/ws".into(),
            tmpdir: "/tmp".into(),
            user: "u".into(),
        };
        let old = crate::profile::load("default", &opts).unwrap();
        assert!(diff(&old, &old).is_empty());
        let mut new = old.clone();
        new.name = "other".into();
        assert!(
            diff(&old, &new).is_empty(),
            "the name alone is no difference"
        );
        new.process.share_tty = !old.process.share_tty;
        new.filesystem.write.push("/srv/cache".into());
        new.filesystem.read.clear();
        let lines = diff(&old, &new);
        assert!(
            lines.contains(&"+ filesystem.write \"/srv/cache\"".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("- filesystem.read ")),
            "{lines:?}"
        );
        assert!(
            lines.contains(&format!(
                "~ process.share_tty {} -> {}",
                old.process.share_tty, new.process.share_tty
            )),
            "{lines:?}"
        );
    }
}
