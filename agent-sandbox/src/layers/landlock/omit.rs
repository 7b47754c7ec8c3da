//! Deny-by-omission: Landlock only grants, so a deny glob (or a protect glob, or a protected
//! path) inside an allowed tree is enforced by replacing the tree's one rule with rules for
//! everything *around* the matches. Deny matches get no rule; protect matches and protected
//! paths get the read part of the tree's rights back (read, list, execute), never a write right.
//!
//! The cost is Landlock's: a right granted on a directory holds for everything beneath it, so
//! every directory on the way from the tree root to a match loses create, delete and rename.
//!
//! No crate does this (it is specific to Landlock's beneath-only rule model), hence this module.
//! The walk is bounded (entries, depth), never follows symlinks, never crosses mount points, and
//! only descends into directories on the way to a possible match (literal glob prefix or
//! protected path), so `/home/u/.ssh/**` inside `/home/u` reads two directories, not `$HOME`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use landlock::{AccessFs, BitFlags};

/// How far one tree walk may go before agentbox refuses the profile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkLimits {
    pub max_entries: usize,
    pub max_depth: usize,
}

impl WalkLimits {
    pub(crate) const DEFAULT: WalkLimits = WalkLimits {
        max_entries: 20_000,
        max_depth: 16,
    };
}

/// One allowed tree as the profile wrote it and as it really is (symlinks resolved).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub written: PathBuf,
    pub real: PathBuf,
    pub access: BitFlags<AccessFs>,
}

/// Deny and protect globs with the literal directory prefix of each, for pruning the walk.
struct Globs {
    patterns: Vec<String>,
    set: GlobSet,
    /// `None` when the glob may match anywhere (`**/.env`).
    prefixes: Vec<Option<PathBuf>>,
    /// What a match of each glob keeps: `Nothing` (deny) or `ReadOnly` (protect).
    keeps: Vec<Keep>,
}

impl Globs {
    fn new(deny: &[String], protect: &[String]) -> anyhow::Result<Self> {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::new();
        let mut prefixes = Vec::new();
        let mut keeps = Vec::new();
        let tagged = deny
            .iter()
            .map(|p| (p, Keep::Nothing, "deny"))
            .chain(protect.iter().map(|p| (p, Keep::ReadOnly, "protect")));
        for (pattern, keep, kind) in tagged {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .with_context(|| format!("invalid {kind} glob '{pattern}'"))?;
            builder.add(glob);
            kept.push(pattern.clone());
            prefixes.push(literal_prefix(pattern));
            keeps.push(keep);
        }
        let set = builder.build().context("building deny and protect globs")?;
        Ok(Globs {
            patterns: kept,
            set,
            prefixes,
            keeps,
        })
    }

    /// True when a glob of kind `keep` may match at or below one of `paths` (ignoring reach).
    fn any_near(&self, keep: Keep, paths: [&Path; 2]) -> bool {
        self.prefixes
            .iter()
            .zip(&self.keeps)
            .filter(|(_, k)| **k == keep)
            .any(|(prefix, _)| match prefix {
                None => true,
                Some(p) => paths.iter().any(|d| d.starts_with(p) || p.starts_with(d)),
            })
    }
}

/// Where each glob is searched in one tree: `(glob index, literal prefix or anywhere)`.
struct Reach<'a> {
    globs: &'a Globs,
    scopes: Vec<(usize, Option<PathBuf>)>,
}

impl Reach<'_> {
    /// Globs that may match at, below or above (on the way down to) one of `paths`.
    fn near(&self, paths: [&Path; 2]) -> Vec<&str> {
        let mut near: Vec<&str> = self
            .scopes
            .iter()
            .filter(|(_, prefix)| match prefix {
                None => true,
                Some(p) => paths.iter().any(|d| d.starts_with(p) || p.starts_with(d)),
            })
            .map(|(i, _)| self.globs.patterns[*i].as_str())
            .collect();
        near.dedup();
        near
    }

    /// What a match keeps, if a glob in reach matches; deny wins over protect.
    fn matched(&self, real: &Path, written: &Path, is_dir: bool) -> Option<Keep> {
        let mut keep = None;
        let mut hit = |p: &Path| {
            for i in self.globs.set.matches(p) {
                if self.scopes.iter().any(|(j, _)| i == *j) {
                    keep = Some(match (keep, self.globs.keeps[i]) {
                        (Some(Keep::Nothing), _) | (_, Keep::Nothing) => Keep::Nothing,
                        _ => Keep::ReadOnly,
                    });
                }
            }
        };
        for p in [real, written] {
            hit(p);
            // `dir/**` matches everything below `dir`; omit `dir` itself rather than leave its
            // listing readable, so also test `dir/`.
            if is_dir {
                hit(&with_trailing_slash(p));
            }
        }
        keep
    }
}

/// What to leave out of allowed trees.
///
/// Anchored globs (`/home/u/.ssh/**`) are searched in every tree they reach. Unanchored ones
/// (`**/.env`) are searched in writable trees, and in read-only trees only down to the writable
/// trees nested in them: read-only trees are mostly the system (`/usr` has 100k+ entries) and
/// get no new files from the agent; `unanchored_skipped` reports them.
pub(crate) struct Omissions {
    globs: Globs,
    /// Real roots of the writable trees.
    writable_roots: Vec<PathBuf>,
    /// Protected paths (real): never writable, still readable where a tree grants reading.
    protected: Vec<PathBuf>,
}

/// What a match keeps from the tree's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Deny glob: nothing.
    Nothing,
    /// Protect glob or protected path: the read part only (read, list, and execute where the
    /// tree grants it: a protected hook in an exec tree still runs).
    ReadOnly,
}

impl Keep {
    fn mask(self) -> BitFlags<AccessFs> {
        match self {
            Keep::Nothing => BitFlags::EMPTY,
            Keep::ReadOnly => AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
        }
    }
}

/// The rules replacing one tree's rule, and which globs matched something in it.
#[derive(Debug, Default)]
pub(crate) struct TreeRules {
    pub rules: Vec<(PathBuf, BitFlags<AccessFs>)>,
    pub omitted: Vec<PathBuf>,
    /// Parts of the tree the search did not examine, and why (a directory this user cannot
    /// list, a mount point, the depth or entry bound): their matches are not omitted. The
    /// launch states them; it never refuses for them.
    pub unexamined: Vec<String>,
}

impl Omissions {
    pub(crate) fn new(
        deny: &[String],
        protect: &[String],
        writable_roots: Vec<PathBuf>,
        protected: Vec<PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(Omissions {
            globs: Globs::new(deny, protect)?,
            writable_roots,
            protected,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.globs.patterns.is_empty() && self.protected.is_empty()
    }

    fn reach(&self, tree: &Tree) -> Reach<'_> {
        let writable = tree.access.intersects(writable_rights());
        let mut scopes = Vec::new();
        for (i, prefix) in self.globs.prefixes.iter().enumerate() {
            // A protect glob takes away write rights only: a read-only tree has none to take.
            if self.globs.keeps[i] == Keep::ReadOnly && !writable {
                continue;
            }
            match prefix {
                Some(p) => scopes.push((i, Some(p.clone()))),
                None if writable => scopes.push((i, None)),
                None => scopes.extend(
                    self.writable_roots
                        .iter()
                        .filter(|w| w.starts_with(&tree.real))
                        .map(|w| (i, Some(w.clone()))),
                ),
            }
        }
        Reach {
            globs: &self.globs,
            scopes,
        }
    }

    /// True when a deny glob may match something at or below `real`/`written`.
    pub(crate) fn glob_may_match_below(&self, real: &Path, written: &Path) -> bool {
        self.globs.any_near(Keep::Nothing, [real, written])
    }

    /// True when a protect glob may match something at or below `real`/`written`.
    pub(crate) fn protect_may_match_below(&self, real: &Path, written: &Path) -> bool {
        self.globs.any_near(Keep::ReadOnly, [real, written])
    }

    /// Unanchored globs not searched (outside nested writable trees) in read-only dir `tree`.
    pub(crate) fn unanchored_skipped(&self, tree: &Tree) -> Vec<&str> {
        if tree.access.intersects(writable_rights()) || !tree.real.is_dir() {
            return Vec::new();
        }
        self.globs
            .patterns
            .iter()
            .zip(&self.globs.prefixes)
            .zip(&self.globs.keeps)
            .filter(|((_, prefix), keep)| prefix.is_none() && **keep == Keep::Nothing)
            .map(|((pattern, _), _)| pattern.as_str())
            .collect()
    }

    /// True when the walk must descend into this directory to find possible matches.
    fn relevant(&self, reach: &Reach, real: &Path, written: &Path) -> bool {
        !reach.near([real, written]).is_empty()
            || self
                .protected
                .iter()
                .any(|p| p.starts_with(real) && p != real)
    }

    /// Whether this entry itself is omitted. Deny globs win over protection.
    fn classify(&self, reach: &Reach, real: &Path, written: &Path, is_dir: bool) -> Option<Keep> {
        match reach.matched(real, written, is_dir) {
            Some(Keep::Nothing) => Some(Keep::Nothing),
            keep => keep.or_else(|| {
                self.protected
                    .iter()
                    .any(|p| p == real)
                    .then_some(Keep::ReadOnly)
            }),
        }
    }

    /// What the tree root itself is subject to: an omission on it or any ancestor covers it all.
    fn classify_root(&self, reach: &Reach, tree: &Tree, is_dir: bool) -> Option<Keep> {
        let mut keep = self.classify(reach, &tree.real, &tree.written, is_dir);
        // Real and written ancestors differ in number when a symlink was resolved: check each.
        let ancestors = tree
            .real
            .ancestors()
            .skip(1)
            .chain(tree.written.ancestors().skip(1));
        for ancestor in ancestors {
            match self.classify(reach, ancestor, ancestor, true) {
                Some(Keep::Nothing) => return Some(Keep::Nothing),
                Some(Keep::ReadOnly) => keep = Some(Keep::ReadOnly),
                None => {}
            }
        }
        // A tree under a protected directory (`real.starts_with(p)`) stays read-only too.
        if keep.is_none() && self.protected.iter().any(|p| tree.real.starts_with(p)) {
            keep = Some(Keep::ReadOnly);
        }
        keep
    }

    /// Replaces `tree`'s rule with rules that leave every match out.
    pub(crate) fn split(&self, tree: &Tree, limits: WalkLimits) -> anyhow::Result<TreeRules> {
        let meta = fs::symlink_metadata(&tree.real)
            .with_context(|| format!("stat {}", tree.real.display()))?;
        let reach = self.reach(tree);
        let mut out = TreeRules::default();
        match self.classify_root(&reach, tree, meta.is_dir()) {
            Some(keep) => {
                out.omitted.push(tree.real.clone());
                let access = tree.access & keep.mask();
                if !access.is_empty() {
                    out.rules.push((tree.real.clone(), access));
                }
                return Ok(out);
            }
            None if !meta.is_dir() || !self.relevant(&reach, &tree.real, &tree.written) => {
                out.rules.push((tree.real.clone(), tree.access));
                return Ok(out);
            }
            None => {}
        }
        let mut walk = Walk {
            omissions: self,
            reach: &reach,
            tree,
            limits,
            dev: meta.dev(),
            entries: 0,
            exhausted: false,
        };
        match walk.visit(&tree.real, &tree.written, 0, &mut out)? {
            Visit::Whole => out.rules.push((tree.real.clone(), tree.access)),
            Visit::Split { .. } => {}
        }
        Ok(out)
    }
}

struct Walk<'a> {
    omissions: &'a Omissions,
    reach: &'a Reach<'a>,
    tree: &'a Tree,
    limits: WalkLimits,
    dev: u64,
    entries: usize,
    /// The entry bound was reached: nothing more is examined.
    exhausted: bool,
}

enum Visit {
    /// Nothing omitted below: the directory keeps one rule for its whole subtree.
    Whole,
    /// Rules were emitted for the parts around the matches.
    Split { dir_matched: bool },
}

impl Walk<'_> {
    /// Records a part the search leaves unexamined (bounded search: stated, not fatal).
    fn skip(&self, out: &mut TreeRules, what: String) {
        let globs = self.reach.near([&self.tree.real, &self.tree.written]);
        out.unexamined.push(format!(
            "deny/protect globs [{}] not enforced by omission in {}: {what}",
            globs.join(", "),
            self.tree.written.display(),
        ));
    }

    fn visit(
        &mut self,
        real: &Path,
        written: &Path,
        depth: usize,
        out: &mut TreeRules,
    ) -> anyhow::Result<Visit> {
        // Children are read first and rules emitted only if something below is omitted. The
        // type comes from getdents (d_type); only directories to descend into are stat'ed.
        let mut children: BTreeMap<std::ffi::OsString, (fs::FileType, Option<Keep>)> =
            BTreeMap::new();
        if self.exhausted {
            return Ok(Visit::Whole);
        }
        let listing = match fs::read_dir(real) {
            Ok(listing) => listing,
            // A directory this process may neither list nor search is just as closed to the
            // agent, which runs with the same uid and fewer capabilities: nothing below it
            // needs omitting. One that is searchable but not listable could hide a match we
            // cannot see: it is skipped and named.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !searchable(real) => {
                return Ok(Visit::Whole);
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.skip(
                    out,
                    format!("{} cannot be listed by this user", real.display()),
                );
                return Ok(Visit::Whole);
            }
            Err(e) => return Err(e).with_context(|| format!("listing {}", real.display())),
        };
        for entry in listing {
            let entry = entry.with_context(|| format!("listing {}", real.display()))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                self.exhausted = true;
                self.skip(
                    out,
                    format!(
                        "the search stopped after {} entries (at {})",
                        self.limits.max_entries,
                        real.display()
                    ),
                );
                return Ok(Visit::Whole);
            }
            let name = entry.file_name();
            let file_type = entry
                .file_type()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            let keep = self.omissions.classify(
                self.reach,
                &real.join(&name),
                &written.join(&name),
                file_type.is_dir(),
            );
            children.insert(name, (file_type, keep));
        }

        let mut pending: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
        let mut split = false;
        let mut dir_matched = false;
        let mut sub_rules = TreeRules::default();
        for (name, (file_type, keep)) in &children {
            let child_real = real.join(name);
            let child_written = written.join(name);
            if let Some(keep) = keep {
                split = true;
                // A protected directory may be listed anyway; only a denied one's names hide.
                dir_matched |= file_type.is_dir() && *keep == Keep::Nothing;
                let access = self.tree.access & keep.mask();
                if !access.is_empty() {
                    sub_rules.rules.push((child_real.clone(), access));
                }
                sub_rules.omitted.push(child_real);
                continue;
            }
            // Symlinks need no rule: every access through one is checked at its target.
            if file_type.is_symlink() {
                continue;
            }
            if file_type.is_dir()
                && self
                    .omissions
                    .relevant(self.reach, &child_real, &child_written)
            {
                let meta = fs::symlink_metadata(&child_real)
                    .with_context(|| format!("stat {}", child_real.display()))?;
                if meta.dev() != self.dev {
                    self.skip(
                        out,
                        format!(
                            "{} is a mount point, which agentbox does not walk",
                            child_real.display()
                        ),
                    );
                    pending.push((child_real, self.tree.access));
                    continue;
                }
                if depth + 1 >= self.limits.max_depth {
                    self.skip(
                        out,
                        format!(
                            "{} is deeper than {} levels",
                            child_real.display(),
                            self.limits.max_depth
                        ),
                    );
                    pending.push((child_real, self.tree.access));
                    continue;
                }
                match self.visit(&child_real, &child_written, depth + 1, &mut sub_rules)? {
                    Visit::Whole => pending.push((child_real, self.tree.access)),
                    Visit::Split { dir_matched: below } => {
                        split = true;
                        dir_matched |= below;
                    }
                }
                continue;
            }
            pending.push((child_real, self.tree.access));
        }

        // What the subtrees left unexamined is stated whatever this directory becomes.
        out.unexamined.append(&mut sub_rules.unexamined);
        if !split {
            return Ok(Visit::Whole);
        }
        out.rules.append(&mut pending);
        out.rules.append(&mut sub_rules.rules);
        out.omitted.append(&mut sub_rules.omitted);
        // The directory itself keeps listing (names only) unless a matched directory lies below,
        // whose names would then be listable too. No make/remove rights: those would let the
        // agent unlink or re-create a match.
        let own = self.tree.access & AccessFs::ReadDir;
        if !dir_matched && !own.is_empty() {
            out.rules.push((real.to_path_buf(), own));
        }
        Ok(Visit::Split { dir_matched })
    }
}

/// Rights that change the filesystem: a tree holding any of them is writable.
pub(crate) fn writable_rights() -> BitFlags<AccessFs> {
    // The newest ABI's write set is a superset of every older one's.
    AccessFs::from_write(landlock::ABI::V10)
}

fn with_trailing_slash(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    PathBuf::from(s)
}

/// The directory part of `pattern` before its first glob metacharacter; `None` for relative
/// patterns (they may match anywhere).
fn literal_prefix(pattern: &str) -> Option<PathBuf> {
    if !pattern.starts_with('/') {
        return None;
    }
    let is_meta = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
    let mut prefix = PathBuf::from("/");
    let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (i, component) in components.iter().enumerate() {
        if component.contains(is_meta) {
            return Some(prefix);
        }
        // A fully literal pattern names one path: that path is its own prefix.
        if i + 1 == components.len() {
            prefix.push(component);
            return Some(prefix);
        }
        prefix.push(component);
    }
    Some(prefix)
}

/// Whether this process may search (traverse) `dir`: access(2) with X_OK.
fn searchable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefix_stops_at_first_glob() {
        assert_eq!(
            literal_prefix("/home/u/.ssh/**"),
            Some("/home/u/.ssh".into())
        );
        assert_eq!(literal_prefix("/ws/**/.env"), Some("/ws".into()));
        assert_eq!(literal_prefix("/ws/.env"), Some("/ws/.env".into()));
        assert_eq!(literal_prefix("/ws/*.pem"), Some("/ws".into()));
        assert_eq!(literal_prefix("**/.env"), None);
    }

    #[test]
    fn globs_match_as_expected() {
        let o = Omissions::new(
            &[
                "/h/.ssh/**".to_string(),
                "**/.env".to_string(),
                "/w/*.pem".to_string(),
            ],
            &["**/.git/hooks".to_string(), "/w/*.pem".to_string()],
            vec![],
            vec![],
        )
        .unwrap();
        let p = Path::new;
        let tree = Tree {
            written: "/".into(),
            real: "/".into(),
            access: writable_rights(),
        };
        let g = &o.reach(&tree);
        assert_eq!(
            o.classify(g, p("/h/.ssh/id_rsa"), p("/x"), false),
            Some(Keep::Nothing)
        );
        assert_eq!(
            o.classify(g, p("/h/.ssh"), p("/x"), true),
            Some(Keep::Nothing)
        );
        assert_eq!(o.classify(g, p("/h/.sshx"), p("/x"), true), None);
        assert_eq!(
            o.classify(g, p("/a/b/.env"), p("/x"), false),
            Some(Keep::Nothing)
        );
        assert_eq!(o.classify(g, p("/a/b/.envrc"), p("/x"), false), None);
        assert_eq!(
            o.classify(g, p("/w/k.pem"), p("/x"), false),
            Some(Keep::Nothing)
        );
        assert_eq!(o.classify(g, p("/w/d/k.pem"), p("/x"), false), None);
        // The as-written path counts as well as the real one.
        assert_eq!(
            o.classify(g, p("/x"), p("/h/.ssh/config"), false),
            Some(Keep::Nothing)
        );
        // Protect keeps reading; deny wins where both match.
        assert_eq!(
            o.classify(g, p("/r/.git/hooks"), p("/x"), true),
            Some(Keep::ReadOnly)
        );
        assert_eq!(o.classify(g, p("/r/.git/hooks2"), p("/x"), true), None);
        assert_eq!(
            o.classify(g, p("/w/k.pem"), p("/x"), false),
            Some(Keep::Nothing)
        );
        // Protect globs are not searched in read-only trees: nothing to take away there.
        let ro = Tree {
            written: "/".into(),
            real: "/".into(),
            access: AccessFs::ReadFile | AccessFs::ReadDir,
        };
        assert_eq!(
            o.classify(&o.reach(&ro), p("/r/.git/hooks"), p("/x"), true),
            None
        );
    }
}
