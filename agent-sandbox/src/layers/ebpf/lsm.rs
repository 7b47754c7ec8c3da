//! BPF LSM layer: compiles the `Policy` into the rules of ebpf-probes' LSM programs
//! (`ebpf_probes::LsmRules`), which decide at access time on the kernel's own copy of the
//! arguments what Landlock cannot express.
//!
//! Deny globs become, by shape:
//! - `**/NAME` and `**/NAME*` (e.g. `**/.env.*`): basename rules for the whole sandbox;
//! - `/DIR/**`: the directory's inode as a denied tree, plus (parent, name) so a removed and
//!   recreated directory stays denied; a DIR that does not exist yet is denied by name under
//!   its nearest existing ancestor (that ancestor's next component, with everything below);
//! - `/a/b/file`: the file's inode, plus (parent, name) for a file created later;
//! - `/dir/pat*tern` (a pattern in the last component only): the matches that exist now, by
//!   inode; later files are not covered (Partial).
//!
//! Anything else is reported as Partial. The write and exec trees become inode sets the
//! programs find by walking a file's ancestors. The network verdict reuses the cgroup layer's
//! rule tables (`SandboxConfig::net`), so this layer only switches it on.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use ebpf_probes::{ChildName, InodeId, LsmRules, NamePattern, ProgramKind, CHILD_NAME_LEN_MAX};

use crate::layers::{Host, Offer};
use globset::GlobBuilder;

use crate::policy::Policy;
use crate::policy::{Coverage, Guarantee, Layer, Status};

/// The layer's name in `Coverage`.
pub(crate) const LAYER: Layer = Layer::BpfLsm;

/// Doctor's view: the LSM programs load, and a cgroup2 group holds the sandbox's rules.
pub(crate) fn offers(host: &Host) -> Vec<Offer> {
    let by = host
        .cgroup2_group()
        .and_then(|_| host.bpf(ProgramKind::Lsm).map(|_| "bpf-lsm".to_string()))
        .map_err(|e| host.privileged_reason(format!("bpf-lsm: {e}")));
    GUARANTEES
        .iter()
        .map(|&g| Offer::new(g, by.clone()))
        .collect()
}

/// The guarantees this layer delivers where its programs are attached.
const GUARANTEES: [Guarantee; 8] = [
    Guarantee::FsDenyExact,
    Guarantee::FsDenialsLogged,
    Guarantee::ExecAllowList,
    Guarantee::NetAddresses,
    Guarantee::ScopeSignals,
    // Metadata changes only inside the write trees (inode_setattr and the xattr hooks).
    Guarantee::FsMetadataReadOnly,
    // Exec and PROT_EXEC mappings only from the exec trees (bprm_check, mmap_file): nothing
    // written elsewhere runs, memfds included.
    Guarantee::WritableNoExec,
    Guarantee::MemfdNoExec,
];

/// The layer compiled for a kernel where its programs are attached.
#[derive(Debug, Clone)]
pub(crate) struct LsmCompiled {
    pub rules: LsmRules,
    pub coverage: Coverage,
    /// The deny globs these rules enforce exactly (files created later included): the
    /// Landlock layer need not enforce them by omission.
    pub exact_globs: Vec<String>,
}

/// Compiles `policy` into LSM rules, assuming the programs are attached.
pub(crate) fn compile_rules(policy: &Policy) -> anyhow::Result<LsmCompiled> {
    let fs = &policy.filesystem;
    let mut rules = LsmRules {
        net: true,
        scope: true,
        kernel_ops: true,
        ..LsmRules::default()
    };
    let mut gaps = Vec::new();
    let mut exact_globs = Vec::new();
    for glob in &fs.deny {
        let before = gaps.len();
        compile_glob(&glob.pattern, &mut rules, &mut gaps)
            .with_context(|| format!("deny glob '{}'", glob.pattern))?;
        if gaps.len() == before {
            exact_globs.push(glob.pattern.clone());
        }
    }
    // Protected basenames (`**/.envrc`): existing matches are the view's read-only binds;
    // these rules refuse a new one, or a write, move or removal, wherever it appears.
    for glob in &fs.protect {
        if let Some(name) = glob
            .pattern
            .strip_prefix("**/")
            .filter(|n| !n.contains('/'))
        {
            if !has_meta(name) {
                rules
                    .protect_names
                    .push(NamePattern::Exact(name.to_string()));
            }
        }
    }
    rules.write_trees = Some(existing_inodes(&fs.write));
    rules.exec_trees = Some(existing_inodes(&fs.exec));

    let mut coverage = Coverage::default();
    for guarantee in GUARANTEES {
        let status = if guarantee == Guarantee::FsDenyExact && !gaps.is_empty() {
            Status::Partial(gaps.join("; "))
        } else {
            Status::Enforced
        };
        coverage.push(LAYER, guarantee, status);
    }
    Ok(LsmCompiled {
        rules,
        coverage,
        exact_globs,
    })
}

/// The layer's coverage where its programs are not attached: every guarantee Missing, with
/// `reason`.
pub(crate) fn missing(reason: &str) -> Coverage {
    let mut coverage = Coverage::default();
    for guarantee in GUARANTEES {
        coverage.push(LAYER, guarantee, Status::Missing(reason.to_string()));
    }
    coverage
}

/// Inodes of the paths that exist (a missing tree grants nothing, so skipping it is safe).
fn existing_inodes(paths: &[PathBuf]) -> Vec<InodeId> {
    paths
        .iter()
        .filter_map(|path| InodeId::of(path).ok())
        .collect()
}

fn has_meta(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// Adds the rules for one deny glob; what it cannot cover exactly goes into `gaps`.
fn compile_glob(pattern: &str, rules: &mut LsmRules, gaps: &mut Vec<String>) -> anyhow::Result<()> {
    if let Some(name) = pattern.strip_prefix("**/") {
        if !name.contains('/') {
            if !has_meta(name) {
                rules.deny_names.push(NamePattern::Exact(name.to_string()));
                return Ok(());
            }
            if let Some(prefix) = name
                .strip_suffix('*')
                .filter(|p| !p.is_empty() && !has_meta(p))
            {
                rules
                    .deny_names
                    .push(NamePattern::Prefix(prefix.to_string()));
                return Ok(());
            }
        }
        gaps.push(format!(
            "'{pattern}': only **/NAME and **/PREFIX* are exact"
        ));
        return Ok(());
    }
    if !pattern.starts_with('/') {
        gaps.push(format!("'{pattern}': not an absolute path"));
        return Ok(());
    }
    if let Some(dir) = pattern.strip_suffix("/**").filter(|d| !has_meta(d)) {
        deny_literal(
            Path::new(if dir.is_empty() { "/" } else { dir }),
            true,
            rules,
        )?;
        return Ok(());
    }
    if !has_meta(pattern) {
        deny_literal(Path::new(pattern), false, rules)?;
        return Ok(());
    }
    let path = Path::new(pattern);
    let (Some(parent), Some(last)) = (path.parent(), path.file_name()) else {
        gaps.push(format!("'{pattern}': no directory part"));
        return Ok(());
    };
    let parent_text = parent.to_string_lossy();
    if has_meta(&parent_text) {
        gaps.push(format!("'{pattern}': patterns above the last component"));
        return Ok(());
    }
    // Expand the pattern in its directory now; later files escape it.
    let glob = GlobBuilder::new(&last.to_string_lossy())
        .literal_separator(true)
        .build()
        .context("invalid glob")?
        .compile_matcher();
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if glob.is_match(entry.file_name()) {
                let found = entry.path();
                if let Ok(id) = InodeId::of(&found) {
                    if found.is_dir() {
                        rules.deny_trees.push(id);
                    } else {
                        rules.deny_inodes.push(id);
                    }
                }
            }
        }
    }
    gaps.push(format!(
        "'{pattern}': files created later under {} are not covered",
        parent.display()
    ));
    Ok(())
}

/// A literal path (`tree`: with everything below it): its inode if it exists, and its name
/// under its nearest existing ancestor so that it stays denied when (re)created.
fn deny_literal(path: &Path, tree: bool, rules: &mut LsmRules) -> anyhow::Result<()> {
    let components: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    if let Ok(id) = InodeId::of(path) {
        if tree || path.is_dir() {
            rules.deny_trees.push(id);
        } else {
            rules.deny_inodes.push(id);
        }
    }
    // The nearest existing ancestor and the first component below it.
    let mut ancestor = PathBuf::from("/");
    for (index, name) in components.iter().enumerate() {
        let next = ancestor.join(name);
        if next.symlink_metadata().is_ok() && index + 1 < components.len() {
            ancestor = next;
            continue;
        }
        let name = name
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        anyhow::ensure!(
            name.len() <= CHILD_NAME_LEN_MAX,
            "component '{name}' is longer than {CHILD_NAME_LEN_MAX} bytes"
        );
        let parent =
            InodeId::of(&ancestor).with_context(|| format!("stat {}", ancestor.display()))?;
        let last = index + 1 == components.len();
        rules.deny_children.push(ChildName {
            parent,
            name: name.to_string(),
            // A missing intermediate directory is denied with everything below it.
            tree: tree || !last,
        });
        break;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer compiled with its availability given: `Err(reason)` when BPF LSM programs do not load.
    fn compile_with(
        policy: &Policy,
        availability: Result<(), String>,
    ) -> anyhow::Result<(LsmRules, Coverage)> {
        match availability {
            Ok(()) => compile_rules(policy).map(|c| (c.rules, c.coverage)),
            Err(reason) => {
                let rules = compile_rules(policy)?.rules;
                let reason = format!("BPF LSM programs do not load on this kernel: {reason}");
                Ok((rules, missing(&reason)))
            }
        }
    }
    use crate::policy::{DenyGlob, FsPolicy, Policy};

    fn policy_with(deny: &[&str], write: &[&Path], exec: &[&Path]) -> Policy {
        let mut policy: Policy = serde_json::from_value(serde_json::json!({
            "name": "test",
            "mode": "enforce",
            "filesystem": {"read": [], "write": [], "exec": [], "deny": []},
            "network": {"allow": [], "deny": [], "bind": []},
            "process": {
                "env_allow": [], "env_deny": [], "env_set": {}, "rlimits": {},
                "max_processes": null, "memory_max": null, "capabilities": [],
                "share_tty": false, "on_violation": "deny"
            },
            "syscalls": {"deny_groups": [], "deny": [], "allow": []},
            "audit": {"log": null, "format": "jsonl"}
        }))
        .expect("a minimal policy");
        policy.filesystem = FsPolicy {
            read: Vec::new(),
            write: write.iter().map(|p| p.to_path_buf()).collect(),
            exec: exec.iter().map(|p| p.to_path_buf()).collect(),
            deny: deny
                .iter()
                .map(|p| DenyGlob {
                    pattern: p.to_string(),
                })
                .collect(),
            protect: Vec::new(),
            search_ms: None,
            unknown: Default::default(),
            exec_unknown: Default::default(),
        };
        policy
    }

    fn compiled(policy: &Policy) -> (LsmRules, Coverage) {
        compile_with(policy, Ok(())).expect("compiles")
    }

    #[test]
    fn basename_globs_become_name_rules() {
        let (rules, coverage) = compiled(&policy_with(&["**/.env", "**/.env.*"], &[], &[]));
        assert_eq!(
            rules.deny_names,
            [
                NamePattern::Exact(".env".into()),
                NamePattern::Prefix(".env.".into())
            ]
        );
        assert!(coverage.enforces(Guarantee::FsDenyExact));
    }

    #[test]
    fn directory_globs_become_trees_and_names_under_their_parent() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        fs::create_dir(&ssh).unwrap();
        let pattern = format!("{}/**", ssh.display());
        let missing = format!("{}/.aws/**", home.path().display());
        let (rules, coverage) = compiled(&policy_with(&[&pattern, &missing], &[], &[]));
        assert_eq!(rules.deny_trees, [InodeId::of(&ssh).unwrap()]);
        let home_id = InodeId::of(home.path()).unwrap();
        assert_eq!(
            rules.deny_children,
            [
                ChildName {
                    parent: home_id,
                    name: ".ssh".into(),
                    tree: true
                },
                // Not there yet: denied by name, so it cannot be created either.
                ChildName {
                    parent: home_id,
                    name: ".aws".into(),
                    tree: true
                },
            ]
        );
        assert!(coverage.enforces(Guarantee::FsDenyExact));
    }

    #[test]
    fn literal_files_are_denied_by_inode_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join(".netrc");
        fs::write(&netrc, "machine x").unwrap();
        let deep_missing = dir.path().join("a/b/c");
        let (rules, _) = compiled(&policy_with(
            &[netrc.to_str().unwrap(), deep_missing.to_str().unwrap()],
            &[],
            &[],
        ));
        assert_eq!(rules.deny_inodes, [InodeId::of(&netrc).unwrap()]);
        let dir_id = InodeId::of(dir.path()).unwrap();
        assert_eq!(
            rules.deny_children,
            [
                ChildName {
                    parent: dir_id,
                    name: ".netrc".into(),
                    tree: false
                },
                // The missing intermediate `a` is denied with everything below it.
                ChildName {
                    parent: dir_id,
                    name: "a".into(),
                    tree: true
                },
            ]
        );
    }

    #[test]
    fn last_component_patterns_expand_now_and_are_partial() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ssh_host_rsa_key", "ssh_host_ed25519_key", "ssh_config"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let pattern = format!("{}/ssh_host_*_key", dir.path().display());
        let (rules, coverage) = compiled(&policy_with(&[&pattern], &[], &[]));
        let mut expected = vec![
            InodeId::of(&dir.path().join("ssh_host_rsa_key")).unwrap(),
            InodeId::of(&dir.path().join("ssh_host_ed25519_key")).unwrap(),
        ];
        let mut got = rules.deny_inodes.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert!(!coverage.enforces(Guarantee::FsDenyExact));
        assert!(coverage
            .gap(Guarantee::FsDenyExact)
            .unwrap()
            .contains("created later"));
    }

    #[test]
    fn unsupported_shapes_are_gaps_not_errors() {
        let (rules, coverage) =
            compiled(&policy_with(&["**/a/b", "relative/x", "/x/*/y"], &[], &[]));
        assert!(rules.deny_names.is_empty() && rules.deny_inodes.is_empty());
        let gap = coverage.gap(Guarantee::FsDenyExact).unwrap();
        assert!(gap.contains("**/a/b") && gap.contains("relative/x") && gap.contains("/x/*/y"));
        // The other guarantees do not depend on the globs.
        assert!(coverage.enforces(Guarantee::ExecAllowList));
    }

    #[test]
    fn trees_and_switches() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let (rules, _) = compiled(&policy_with(&[], &[dir.path()], &[dir.path(), &missing]));
        let id = InodeId::of(dir.path()).unwrap();
        assert_eq!(rules.write_trees, Some(vec![id]));
        assert_eq!(
            rules.exec_trees,
            Some(vec![id]),
            "missing trees grant nothing"
        );
        assert!(rules.net && rules.scope && rules.kernel_ops);
    }

    #[test]
    fn without_bpf_lsm_everything_is_missing_with_the_reason() {
        let (_, coverage) = compile_with(&policy_with(&[], &[], &[]), Err("EPERM".into())).unwrap();
        assert!(!coverage.entries.is_empty());
        for entry in &coverage.entries {
            assert_eq!(entry.layer, LAYER);
            assert_eq!(
                entry.status,
                Status::Missing("BPF LSM programs do not load on this kernel: EPERM".into())
            );
        }
    }
}
