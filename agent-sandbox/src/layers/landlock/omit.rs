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

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use landlock::{AccessFs, BitFlags};

/// How far the search may go: entries and depth per tree, and CPU time for the open-ended
/// part of the writable trees (the listings below a tree's top level, other than directories
/// a glob names or that hold a protected path), shared by every tree of one search. Read-only
/// trees are reached only by anchored globs, whose literal prefixes bound them (`/etc/shadow`
/// lists one directory). Past a bound the rest is skipped and stated, never refused.
#[derive(Debug, Clone)]
pub(crate) struct WalkLimits {
    pub max_entries: usize,
    pub max_depth: usize,
    /// CPU time the open-ended listings may take; `None`: no time bound.
    pub budget: Option<Duration>,
    /// CPU time they took so far, in every tree of this search.
    pub(super) spent: std::rc::Rc<std::cell::Cell<Duration>>,
}

impl Default for WalkLimits {
    /// No time bound: for tests, which set the bounds they check.
    fn default() -> Self {
        WalkLimits {
            max_entries: 20_000,
            max_depth: 16,
            budget: None,
            spent: Default::default(),
        }
    }
}

impl WalkLimits {
    /// The default bounds with a time budget for one search.
    pub(crate) fn within(budget: Duration) -> WalkLimits {
        WalkLimits {
            budget: Some(budget),
            ..WalkLimits::default()
        }
    }

    /// The budget, if the open-ended listings have spent it (counting one running since
    /// `since`, a `thread_cpu` reading).
    fn expired(&self, since: Duration) -> Option<Duration> {
        let spent = self.spent.get() + thread_cpu().saturating_sub(since);
        self.budget.filter(|budget| spent >= *budget)
    }
}

/// This thread's CPU time. The budget counts the search's own work (in the kernel too), not
/// the time it waited for a CPU: on a loaded machine (a CI runner, a suite starting sandboxes
/// in parallel) the search reaches as far as on an idle one.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// How often (in entries) the walk reads the clock.
const CLOCK_EVERY: usize = 64;

/// One allowed tree as the profile wrote it and as it really is (symlinks resolved).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub written: PathBuf,
    pub real: PathBuf,
    pub access: BitFlags<AccessFs>,
}

/// Deny, protect and found globs with the literal directory prefix of each, for pruning the
/// walk.
struct Globs {
    patterns: Vec<String>,
    /// The deny and protect globs, then the found ones (`Kind::Find`) apart: the first set
    /// is the one the supervisor's mediation compiles too (`glob_set` compiles it once).
    set: GlobSet,
    found_set: GlobSet,
    /// `None` when the glob may match anywhere (`**/.env`).
    prefixes: Vec<Option<PathBuf>>,
    /// What each glob is for.
    kinds: Vec<Kind>,
    /// The last component of every glob that ends in a name (`.env`, `*.pem`): an entry whose
    /// name none of them matches can only match a glob of `tails`. Most entries of a large
    /// tree fail this one test, and skip the full match of two paths against every glob.
    names: GlobSet,
    /// The literal prefixes of the globs that end otherwise (`~/.ssh/**`, braces): an entry
    /// at or below one of them takes the full match. `None`: anywhere.
    tails: Vec<Option<PathBuf>>,
    /// Every literal component of every glob (`.git`, `hooks`, `.vscode`): directories so
    /// named are searched first and whatever the time budget.
    named: std::collections::HashSet<std::ffi::OsString>,
}

/// Which entries of one directory take the full match (see `Globs::names`).
struct DirFilter {
    /// Every entry: the directory is at or below a tail glob's prefix.
    all: bool,
    /// Entries that are a tail glob's prefix, or a protected path.
    exact: Vec<std::ffi::OsString>,
}

impl Globs {
    fn new(deny: &[String], protect: &[String], find: &[String]) -> anyhow::Result<Self> {
        let mut kept = Vec::new();
        let mut prefixes = Vec::new();
        let mut kinds = Vec::new();
        let tagged = deny
            .iter()
            .map(|p| (p, Kind::Deny))
            .chain(protect.iter().map(|p| (p, Kind::Protect)))
            .chain(find.iter().map(|p| (p, Kind::Find)));
        for (pattern, kind) in tagged {
            crate::policy::globs::glob(pattern).with_context(|| {
                let kind = if kind == Kind::Deny {
                    "deny"
                } else {
                    "protect"
                };
                format!("invalid {kind} glob '{pattern}'")
            })?;
            kept.push(pattern.clone());
            prefixes.push(literal_prefix(pattern));
            kinds.push(kind);
        }
        let (omitted, found) = kept.split_at(deny.len() + protect.len());
        let set =
            crate::policy::globs::glob_set(omitted).context("building deny and protect globs")?;
        let found_set =
            crate::policy::globs::glob_set(found).context("building deny and protect globs")?;
        let mut names = GlobSetBuilder::new();
        let mut tails = Vec::new();
        for (pattern, prefix) in kept.iter().zip(&prefixes) {
            let last = pattern.rsplit('/').next().unwrap_or_default();
            if pattern.contains(['{', '}']) || last.is_empty() || last.contains("**") {
                tails.push(prefix.clone());
                continue;
            }
            let glob = GlobBuilder::new(last)
                .literal_separator(true)
                .backslash_escape(true)
                .build();
            match glob {
                Ok(glob) => {
                    names.add(glob);
                }
                Err(_) => tails.push(prefix.clone()),
            }
        }
        let is_meta = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
        let named = kept
            .iter()
            .flat_map(|p| p.split('/'))
            .filter(|c| !c.is_empty() && !c.contains(is_meta))
            .map(std::ffi::OsString::from)
            .collect();
        Ok(Globs {
            patterns: kept,
            set,
            found_set,
            prefixes,
            kinds,
            names: names.build().context("building deny and protect globs")?,
            tails,
            named,
        })
    }

    /// Which entries of directory `real` (written `written`) may match a glob by more than
    /// their name, with `protected` paths among them.
    fn dir_filter(&self, real: &Path, written: &Path, protected: &[PathBuf]) -> DirFilter {
        let mut filter = DirFilter {
            all: false,
            exact: Vec::new(),
        };
        for prefix in &self.tails {
            match prefix {
                None => filter.all = true,
                Some(p) if under(real, p) || under(written, p) => filter.all = true,
                Some(p) if p.parent().is_some_and(|d| d == real || d == written) => {
                    filter.exact.extend(p.file_name().map(|n| n.to_os_string()));
                }
                Some(_) => {}
            }
        }
        filter.exact.extend(
            protected
                .iter()
                .filter(|p| p.parent() == Some(real))
                .filter_map(|p| p.file_name().map(|n| n.to_os_string())),
        );
        filter
    }

    /// Whether entry `name` of a directory with `filter` needs the full match.
    fn may_match(&self, filter: &DirFilter, name: &std::ffi::OsStr) -> bool {
        filter.all || filter.exact.iter().any(|n| n == name) || self.names.is_match(name)
    }

    /// True when a glob of `kind` may match at or below one of `paths` (ignoring reach).
    fn any_near(&self, kind: Kind, paths: [&Path; 2]) -> bool {
        self.prefixes
            .iter()
            .zip(&self.kinds)
            .filter(|(_, k)| **k == kind)
            .any(|(prefix, _)| match prefix {
                None => true,
                Some(p) => paths.iter().any(|d| under(d, p) || under(p, d)),
            })
    }
}

/// Where each glob is searched in one tree: `(glob index, literal prefix or anywhere)`.
struct Reach<'a> {
    globs: &'a Globs,
    scopes: Vec<(usize, Option<PathBuf>)>,
}

impl Reach<'_> {
    /// Globs that may match at, below or above (on the way down to) one of `paths`: the
    /// found ones (`Kind::Find`) if `found`, else the others.
    fn near(&self, paths: [&Path; 2], found: bool) -> Vec<&str> {
        let mut near: Vec<&str> = self
            .scopes
            .iter()
            .filter(|(i, _)| (self.globs.kinds[*i] == Kind::Find) == found)
            .filter(|(_, prefix)| match prefix {
                None => true,
                Some(p) => paths.iter().any(|d| under(d, p) || under(p, d)),
            })
            .map(|(i, _)| self.globs.patterns[*i].as_str())
            .collect();
        near.dedup();
        near
    }

    /// Whether any glob may match at, below or above one of `paths` (`near` without the list).
    fn any_near(&self, paths: [&Path; 2]) -> bool {
        self.scopes.iter().any(|(_, prefix)| match prefix {
            None => true,
            Some(p) => paths.iter().any(|d| under(d, p) || under(p, d)),
        })
    }

    /// What a match keeps, if a deny or protect glob in reach matches (deny wins over
    /// protect), and whether a found glob in reach matches.
    fn matched(&self, real: &Path, written: &Path, is_dir: bool) -> (Option<Keep>, bool) {
        let mut keep = None;
        let mut found = false;
        let mut hit = |p: &Path| {
            let found_from = self.globs.set.len();
            let found_matches = self.globs.found_set.matches(p).into_iter();
            for i in
                (self.globs.set.matches(p).into_iter()).chain(found_matches.map(|i| i + found_from))
            {
                if !self.scopes.iter().any(|(j, _)| i == *j) {
                    continue;
                }
                keep = match (keep, self.globs.kinds[i]) {
                    (Some(Keep::Nothing), _) | (_, Kind::Deny) => Some(Keep::Nothing),
                    (_, Kind::Protect) => Some(Keep::ReadOnly),
                    (keep, Kind::Find) => {
                        found = true;
                        keep
                    }
                };
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
        (keep, found)
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

/// What a glob is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Its matches are left out (`Keep::Nothing`).
    Deny,
    /// Its matches keep the read part (`Keep::ReadOnly`).
    Protect,
    /// Its matches in writable trees are only reported (`TreeRules::found`), for another
    /// layer (the read-only binds of `layers::mounts`): one walk serves both searches.
    Find,
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
    /// Matches of the found globs (`Kind::Find`). Not looked for inside what is omitted: a
    /// denied directory is closed to the agent whole, a protected one already read-only.
    pub found: Vec<PathBuf>,
    /// What `unexamined` says, for the found globs.
    pub found_unexamined: Vec<String>,
    /// Deny matches this user can neither read, write nor search and does not own: closed to
    /// the agent by the kernel's permission check already, so left in the tree's rule.
    pub closed: Vec<PathBuf>,
}

impl Omissions {
    #[cfg(test)]
    pub(crate) fn new(
        deny: &[String],
        protect: &[String],
        writable_roots: Vec<PathBuf>,
        protected: Vec<PathBuf>,
    ) -> anyhow::Result<Self> {
        Self::finding(deny, protect, &[], writable_roots, protected)
    }

    /// `new`, also finding the matches of `find` in the writable trees (`TreeRules::found`).
    pub(crate) fn finding(
        deny: &[String],
        protect: &[String],
        find: &[String],
        writable_roots: Vec<PathBuf>,
        protected: Vec<PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(Omissions {
            globs: Globs::new(deny, protect, find)?,
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
            if self.globs.kinds[i] != Kind::Deny && !writable {
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
        self.globs.any_near(Kind::Deny, [real, written])
    }

    /// True when a protect glob may match something at or below `real`/`written`.
    pub(crate) fn protect_may_match_below(&self, real: &Path, written: &Path) -> bool {
        self.globs.any_near(Kind::Protect, [real, written])
    }

    /// True when a found glob may match something at or below `real`/`written`.
    pub(crate) fn find_may_match_below(&self, real: &Path, written: &Path) -> bool {
        self.globs.any_near(Kind::Find, [real, written])
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
            .zip(&self.globs.kinds)
            .filter(|((_, prefix), kind)| prefix.is_none() && **kind == Kind::Deny)
            .map(|((pattern, _), _)| pattern.as_str())
            .collect()
    }

    /// True when the walk must descend into this directory to find possible matches.
    fn relevant(&self, reach: &Reach, real: &Path, written: &Path) -> bool {
        reach.any_near([real, written])
            || self.protected.iter().any(|p| under(p, real) && p != real)
    }

    /// Whether this entry itself is omitted. Deny globs win over protection.
    #[cfg(test)]
    fn classify(&self, reach: &Reach, real: &Path, written: &Path, is_dir: bool) -> Option<Keep> {
        self.classify_finding(reach, real, written, is_dir).0
    }

    /// `classify`, and whether a found glob matches the entry.
    fn classify_finding(
        &self,
        reach: &Reach,
        real: &Path,
        written: &Path,
        is_dir: bool,
    ) -> (Option<Keep>, bool) {
        let (keep, found) = reach.matched(real, written, is_dir);
        let keep = match keep {
            Some(Keep::Nothing) => Some(Keep::Nothing),
            keep => keep.or_else(|| {
                self.protected
                    .iter()
                    .any(|p| p == real)
                    .then_some(Keep::ReadOnly)
            }),
        };
        (keep, found)
    }

    /// What the tree root itself is subject to: an omission on it or any ancestor covers it
    /// all; and whether a found glob matches it or an ancestor.
    fn classify_root(&self, reach: &Reach, tree: &Tree, is_dir: bool) -> (Option<Keep>, bool) {
        let (mut keep, mut found) = self.classify_finding(reach, &tree.real, &tree.written, is_dir);
        // Real and written ancestors differ in number when a symlink was resolved: check each.
        let ancestors = tree
            .real
            .ancestors()
            .skip(1)
            .chain(tree.written.ancestors().skip(1));
        for ancestor in ancestors {
            let (ancestor_keep, ancestor_found) =
                self.classify_finding(reach, ancestor, ancestor, true);
            found |= ancestor_found;
            match ancestor_keep {
                Some(Keep::Nothing) => return (Some(Keep::Nothing), found),
                Some(Keep::ReadOnly) => keep = Some(Keep::ReadOnly),
                None => {}
            }
        }
        // A tree under a protected directory (`real.starts_with(p)`) stays read-only too.
        if keep.is_none() && self.protected.iter().any(|p| tree.real.starts_with(p)) {
            keep = Some(Keep::ReadOnly);
        }
        (keep, found)
    }

    /// Replaces `tree`'s rule with rules that leave every match out.
    pub(crate) fn split(&self, tree: &Tree, limits: &WalkLimits) -> anyhow::Result<TreeRules> {
        // The time budget is for the open-ended search of writable trees (see WalkLimits).
        let limits = if tree.access.intersects(writable_rights()) {
            limits.clone()
        } else {
            WalkLimits {
                budget: None,
                ..limits.clone()
            }
        };
        let meta = fs::symlink_metadata(&tree.real)
            .with_context(|| format!("stat {}", tree.real.display()))?;
        let reach = self.reach(tree);
        let mut out = TreeRules::default();
        let (keep, found) = self.classify_root(&reach, tree, meta.is_dir());
        if found {
            out.found.push(tree.real.clone());
        }
        match keep {
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
            out_of_time: false,
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
    /// The time budget ran out: only the directories the search never skips are examined.
    out_of_time: bool,
}

enum Visit {
    /// Nothing omitted below: the directory keeps one rule for its whole subtree.
    Whole,
    /// Rules were emitted for the parts around the matches.
    Split { dir_matched: bool },
}

impl Walk<'_> {
    /// Whether the time budget has run out (a listing running since `since`); the first
    /// time, says where.
    fn time_ran_out(&mut self, out: &mut TreeRules, at: &Path, since: Duration) -> bool {
        let Some(budget) = self.limits.expired(since) else {
            return false;
        };
        if !self.out_of_time {
            self.out_of_time = true;
            self.skip(
                out,
                format!(
                    "the search's time ran out ({} ms of CPU; `filesystem.search_ms` sets it) \
                     at {}: directories below its top level and the ones a glob names were \
                     not examined from there on",
                    budget.as_millis(),
                    at.display()
                ),
            );
        }
        true
    }

    /// Records a part the search leaves unexamined (bounded search: stated, not fatal), for
    /// the omitted globs and the found ones apart: each layer states its own.
    fn skip(&self, out: &mut TreeRules, what: String) {
        let paths: [&Path; 2] = [&self.tree.real, &self.tree.written];
        for (found, list) in [
            (false, &mut out.unexamined),
            (true, &mut out.found_unexamined),
        ] {
            let globs = self.reach.near(paths, found);
            if !globs.is_empty() {
                list.push(format!(
                    "deny/protect globs [{}] not enforced by omission in {}: {what}",
                    globs.join(", "),
                    self.tree.written.display(),
                ));
            }
        }
    }

    /// Whether listing `real` (at `depth`) counts against the time budget.
    fn timed(&self, real: &Path, depth: usize) -> bool {
        depth > 0
            && self.limits.budget.is_some()
            && !real
                .file_name()
                .is_some_and(|n| self.reach.globs.named.contains(n))
            && !self.omissions.protected.iter().any(|p| under(p, real))
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
        // Unsorted: the rules end up in a map, and the omitted paths are sorted by the caller.
        let mut children: Vec<(std::ffi::OsString, fs::FileType, Option<Keep>)> = Vec::new();
        let mut found = Vec::new();
        let mut closed = Vec::new();
        if self.exhausted {
            return Ok(Visit::Whole);
        }
        // The time budget is for the open-ended part of the search. The tree's own listing
        // and directories a glob names (`.git` of `**/.git/hooks`, `.vscode`) are examined
        // whatever the time: they are few and small, and hold what matters most (the
        // repository git runs in next, a `.env` at the top).
        let timed = self.timed(real, depth);
        let since = if timed { thread_cpu() } else { Duration::ZERO };
        if timed && (self.out_of_time || self.time_ran_out(out, real, since)) {
            return Ok(Visit::Whole);
        }
        let filter = self
            .reach
            .globs
            .dir_filter(real, written, &self.omissions.protected);
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
            if timed && self.entries % CLOCK_EVERY == 0 && self.time_ran_out(out, real, since) {
                return Ok(Visit::Whole);
            }
            let name = entry.file_name();
            let file_type = entry
                .file_type()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            let keep = if self.reach.globs.may_match(&filter, &name) {
                let (keep, is_found) = self.omissions.classify_finding(
                    self.reach,
                    &real.join(&name),
                    &written.join(&name),
                    file_type.is_dir(),
                );
                if is_found {
                    found.push(real.join(&name));
                }
                // `/etc/shadow` as an unprivileged user: omitting it would split `/etc` into
                // a rule per entry (~140) for nothing the agent could open anyway. Read-only
                // trees only: in a writable one the omission also keeps the match from being
                // deleted or renamed, which its permissions do not.
                if keep == Some(Keep::Nothing)
                    && !self.tree.access.intersects(writable_rights())
                    && closed_to_user(&real.join(&name))
                {
                    closed.push(real.join(&name));
                    None
                } else {
                    keep
                }
            } else {
                None
            };
            children.push((name, file_type, keep));
        }

        if timed {
            let spent = self.limits.spent.get() + thread_cpu().saturating_sub(since);
            self.limits.spent.set(spent);
        }

        // Children that keep the tree's whole rule if this directory is split: names only, as
        // most directories are not split and most entries are files.
        let mut pending: Vec<&std::ffi::OsStr> = Vec::new();
        let mut split = false;
        let mut dir_matched = false;
        let mut sub_rules = TreeRules::default();
        // Directories a glob names first: the time budget must not go to `node_modules`
        // before `.git` is examined.
        let named = &self.reach.globs.named;
        let order = children
            .iter()
            .filter(|(n, t, _)| t.is_dir() && named.contains(n))
            .chain(
                children
                    .iter()
                    .filter(|(n, t, _)| !(t.is_dir() && named.contains(n))),
            );
        for (name, file_type, keep) in order {
            // Symlinks need no rule: every access through one is checked at its target.
            if keep.is_none() && file_type.is_symlink() {
                continue;
            }
            if keep.is_none() && !file_type.is_dir() {
                pending.push(name);
                continue;
            }
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
            // Out of time, a directory the budget covers is not even stat'ed: in a large
            // tree the stats of the rest of one listing were most of the search's cost.
            if self.out_of_time && self.timed(&child_real, depth + 1) {
                pending.push(name);
                continue;
            }
            if self
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
                    pending.push(name);
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
                    pending.push(name);
                    continue;
                }
                match self.visit(&child_real, &child_written, depth + 1, &mut sub_rules)? {
                    Visit::Whole => pending.push(name),
                    Visit::Split { dir_matched: below } => {
                        split = true;
                        dir_matched |= below;
                    }
                }
                continue;
            }
            pending.push(name);
        }

        // What the subtrees left unexamined, and found, is kept whatever this directory becomes.
        out.unexamined.append(&mut sub_rules.unexamined);
        out.found_unexamined.append(&mut sub_rules.found_unexamined);
        out.found.append(&mut found);
        out.found.append(&mut sub_rules.found);
        out.closed.append(&mut closed);
        out.closed.append(&mut sub_rules.closed);
        if !split {
            return Ok(Visit::Whole);
        }
        out.rules.extend(
            pending
                .into_iter()
                .map(|n| (real.join(n), self.tree.access)),
        );
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

/// `path.starts_with(dir)` for the absolute, normalised paths of the walk, on bytes: the
/// walk asks it for every directory and glob, and `Path::starts_with` compares component by
/// component.
fn under(path: &Path, dir: &Path) -> bool {
    let (path, dir) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    path.starts_with(dir)
        && (path.len() == dir.len() || dir.ends_with(b"/") || path[dir.len()] == b'/')
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

/// Whether this user can neither read, write nor execute (search) `path` and cannot change
/// that (another user owns it). The agent runs as the same user with fewer capabilities (in
/// its user namespace none count for files of an unmapped owner), so the kernel's permission
/// check closes it to the agent as well. Root can always read: never closed to it.
fn closed_to_user(path: &Path) -> bool {
    use nix::unistd::AccessFlags;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if meta.file_type().is_symlink() || meta.uid() == nix::unistd::geteuid().as_raw() {
        return false;
    }
    [AccessFlags::R_OK, AccessFlags::W_OK, AccessFlags::X_OK]
        .into_iter()
        .all(|mode| nix::unistd::access(path, mode).is_err())
}

/// Whether this process may search (traverse) `dir`: access(2) with X_OK.
fn searchable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_starts_with_by_component() {
        for (path, dir) in [
            ("/a/b", "/a"),
            ("/a", "/a"),
            ("/ab", "/a"),
            ("/a/b", "/"),
            ("/", "/a"),
            ("/a/bc/d", "/a/b"),
            ("/a/b/c", "/a/b"),
        ] {
            assert_eq!(
                under(Path::new(path), Path::new(dir)),
                Path::new(path).starts_with(dir),
                "{path} under {dir}"
            );
        }
    }

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

    /// The name prefilter skips only entries no glob could match: the walk omits exactly
    /// what a full match of every path finds (first match on each path from the root).
    #[test]
    fn the_name_prefilter_omits_what_the_full_match_omits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let files = [
            ".env",
            "a/.env.local",
            "a/b/.envrc",
            "a/b/c/key.pem",
            "key.pem",
            "h/.ssh/id_rsa",
            "h/.ssh/config",
            "h/.sshx/keep",
            "r/.git/hooks/pre-commit",
            "r/.git/HEAD",
            "r/src/main.rs",
            "x/y/z/w/deep.txt",
            "p/protected.txt",
            "brace/one/t",
            "brace/two/t",
        ];
        for f in files {
            let path = root.join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "x").unwrap();
        }
        let r = root.display();
        let deny = [
            "**/.env".to_string(),
            "**/.env.*".to_string(),
            format!("{r}/*.pem"),
            format!("{r}/h/.ssh/**"),
            format!("{r}/brace/{{one,three}}/**"),
        ];
        let protect = ["**/.git/hooks".to_string(), "**/.envrc".to_string()];
        let protected = vec![root.join("p/protected.txt")];
        let o = Omissions::new(&deny, &protect, vec![root.clone()], protected).unwrap();
        let tree = Tree {
            written: root.clone(),
            real: root.clone(),
            access: writable_rights() | AccessFs::ReadFile | AccessFs::ReadDir,
        };
        let mut walked = o.split(&tree, &WalkLimits::default()).unwrap().omitted;
        walked.sort();

        let reach = o.reach(&tree);
        let mut expected = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let is_dir = e.file_type().unwrap().is_dir();
                let path = e.path();
                if o.classify(&reach, &path, &path, is_dir).is_some() {
                    expected.push(path);
                } else if is_dir {
                    stack.push(path);
                }
            }
        }
        expected.sort();
        assert_eq!(walked, expected);
        // And the shapes the filter treats differently are all there.
        for f in [
            ".env",
            "key.pem",
            "h/.ssh",
            "brace/one",
            "r/.git/hooks",
            "a/b/.envrc",
        ] {
            assert!(walked.contains(&root.join(f)), "{f}: {walked:?}");
        }
        assert!(walked.contains(&root.join("p/protected.txt")), "{walked:?}");
        assert!(!walked.contains(&root.join("a/b/c/key.pem")), "{walked:?}");
    }
}
