//! Validate one profile file and apply it on top of what it extends.

use std::ops::Range;
use std::path::PathBuf;

use globset::GlobBuilder;
use serde_spanned::Spanned;

use super::error::{did_you_mean, ProfileError, Source};
use super::expand::{self, ValueError};
use super::format::{IntOrString, ModeToml, ProfileFile, ViolationToml};
use super::net::{is_domain_entry, parse_domain_entry, parse_net_entry, parse_port_range};
use super::{LoadOptions, Loaded};
use crate::policy::{
    capabilities, syscalls, DenyGlob, LogFormat, Mode, Policy, Rlimit, SyscallGroup,
    ViolationAction,
};

/// Accumulates the files of an `extends` chain, root first, into one `Policy`.
pub(crate) struct Builder<'a> {
    opts: &'a LoadOptions,
    policy: Policy,
    description: Option<String>,
    io_uring: Option<bool>,
    notes: Vec<String>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(name: &str, opts: &'a LoadOptions) -> Self {
        Builder {
            opts,
            policy: Policy {
                name: name.to_string(),
                mode: Mode::default(),
                filesystem: Default::default(),
                network: Default::default(),
                process: Default::default(),
                syscalls: Default::default(),
                audit: Default::default(),
            },
            description: None,
            io_uring: None,
            notes: Vec::new(),
        }
    }

    pub(super) fn finish(mut self) -> Loaded {
        let groups = &mut self.policy.syscalls.deny_groups;
        // io_uring bypasses seccomp argument checks entirely: denied unless asked for by name.
        if self.io_uring == Some(true) {
            groups.retain(|g| *g != SyscallGroup::IoUring);
        } else if !groups.contains(&SyscallGroup::IoUring) {
            groups.push(SyscallGroup::IoUring);
        }
        // A shared terminal is only safe with TIOCSTI/TIOCLINUX filtered.
        if self.policy.process.share_tty && !groups.contains(&SyscallGroup::TtyInjection) {
            groups.push(SyscallGroup::TtyInjection);
        }
        groups.sort();
        // Landlock cannot carve secrets out of an allowed tree: granting an ancestor of HOME
        // exposes everything in it that the deny globs do not name.
        let fs = &self.policy.filesystem;
        for granted in fs.read.iter().chain(&fs.write).chain(&fs.exec) {
            if self.opts.home.starts_with(granted) {
                self.notes.push(format!(
                    "`{}` grants your whole home directory `{}`; only the deny globs protect \
                     what is in it",
                    granted.display(),
                    self.opts.home.display()
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        self.notes.retain(|n| seen.insert(n.clone()));
        Loaded {
            policy: self.policy,
            description: self.description,
            notes: self.notes,
        }
    }

    pub(super) fn apply(&mut self, src: &Source, file: ProfileFile) -> Result<(), ProfileError> {
        let opts = self.opts;
        let ctx = Ctx { src };
        if file.description.is_some() {
            self.description = file.description;
        }
        if let Some(mode) = file.mode {
            self.policy.mode = match mode {
                ModeToml::Enforce => Mode::Enforce,
                ModeToml::Audit => Mode::Audit,
            };
        }

        // [filesystem]
        let fs = file.filesystem;
        let notes = &mut self.notes;
        let mut path = |v: &str| -> Result<Vec<PathBuf>, ValueError> {
            let expanded = expand::expand(v, opts, true)?;
            let (path, note) = expand::normalise_path(&expanded)?;
            notes.extend(note);
            Ok(vec![path])
        };
        let p = &mut self.policy.filesystem;
        ctx.edit(&mut p.read, &fs.read, &mut path)?;
        ctx.edit(&mut p.write, &fs.write, &mut path)?;
        ctx.edit(&mut p.exec, &fs.exec, &mut path)?;
        let mut deny = |v: &str| path_glob(v, "deny", opts, notes);
        ctx.edit(&mut p.deny, &fs.deny, &mut deny)?;
        let mut protect = |v: &str| path_glob(v, "protect", opts, notes);
        ctx.edit(&mut p.protect, &fs.protect, &mut protect)?;
        if let Some(ms) = fs.search_ms {
            let v = u64::try_from(*ms.get_ref())
                .ok()
                .filter(|v| *v <= 60_000)
                .ok_or_else(|| {
                    ctx.err(
                        ms.span(),
                        "`search_ms` must be 0 to 60000 (milliseconds)",
                        Some("0 searches nothing; 500 covers about a million entries".into()),
                    )
                })?;
            p.search_ms = Some(v);
        }
        if let Some(unknown) = &fs.unknown {
            p.unknown = ctx.unknown(
                unknown,
                "`ask` holds a read no tree allows until the approver decides (agentbox run \
                 --approver); writes outside the write trees are never asked",
            )?;
        }
        if let Some(unknown) = &fs.exec_unknown {
            p.exec_unknown = ctx.unknown(
                unknown,
                "`ask` holds an exec outside the exec trees until the approver decides \
                 (agentbox run --approver; needs BPF LSM)",
            )?;
        }

        // [network]
        let net = file.network;
        let mut rule = |v: &str| parse_net_entry(v).map_err(|e| ValueError::new(e, None));
        let mut domain = |v: &str| {
            parse_domain_entry(v)
                .map(|d| vec![d])
                .map_err(|e| ValueError::new(e, None))
        };
        let p = &mut self.policy.network;
        let by_name = |e: &&Spanned<String>| is_domain_entry(e.get_ref().trim_start_matches('!'));
        let (names, addresses): (Vec<_>, Vec<_>) = net.allow.iter().partition(by_name);
        let owned = |list: Vec<&Spanned<String>>| list.into_iter().cloned().collect::<Vec<_>>();
        ctx.edit(&mut p.allow, &owned(addresses), &mut rule)?;
        ctx.edit(&mut p.domains, &owned(names), &mut domain)?;
        if let Some(named) = net.deny.iter().find(by_name) {
            return Err(ctx.err(
                named.span(),
                format!("`{}`: host names cannot be denied", named.get_ref()),
                Some(
                    "a name no allow entry covers is already unreachable (its lookup fails);                      narrow the allow entry instead"
                        .into(),
                ),
            ));
        }
        ctx.edit(&mut p.deny, &net.deny, &mut rule)?;
        if let Some(up) = &net.dns_upstream {
            let addr = up.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
                ctx.err(
                    up.span(),
                    format!("`{}` is not an IP:PORT address", up.get_ref()),
                    Some("like `127.0.0.1:5353` or `[2001:db8::53]:53`".into()),
                )
            })?;
            p.dns_upstream = Some(addr);
        }
        if let Some(unknown) = &net.unknown {
            p.unknown = ctx.unknown(
                unknown,
                "`ask` holds the connection until the approver decides (agentbox run \
                 --approver)",
            )?;
        }
        let mut unix = |v: &str| {
            let globs = path_glob(v, "network.unix", opts, &mut self.notes)?;
            match globs.iter().find(|g| g.pattern.starts_with("**/")) {
                Some(g) => Err(ValueError::new(
                    format!("network.unix glob `{}` is not anchored", g.pattern),
                    Some("name the socket's directory: `/run/user/*/bus`, `~/.ssh/agent.sock`"),
                )),
                None => Ok(globs.into_iter().map(|g| g.pattern).collect()),
            }
        };
        ctx.edit(&mut p.unix, &net.unix, &mut unix)?;
        for entry in &net.bind {
            let span = entry.span();
            match entry.get_ref() {
                IntOrString::Int(n) => {
                    let port = u16::try_from(*n).map_err(|_| {
                        ctx.err(span, format!("`{n}` is not a port (0-65535)"), None)
                    })?;
                    push_unique(&mut p.bind, [crate::policy::PortRange::single(port)]);
                }
                IntOrString::Str(s) => {
                    let as_entry = Spanned::new(span, s.clone());
                    let mut port = |v: &str| {
                        parse_port_range(v)
                            .map(|r| vec![r])
                            .map_err(|e| ValueError::new(e, None))
                    };
                    ctx.edit(&mut p.bind, std::slice::from_ref(&as_entry), &mut port)?;
                }
            }
        }

        // [process]
        let proc = file.process;
        let p = &mut self.policy.process;
        let mut env_glob = |v: &str| -> Result<Vec<String>, ValueError> {
            if v.is_empty() || v.contains(['=', '\0', '/']) {
                return Err(ValueError::new(
                    format!("`{v}` is not an environment variable name glob"),
                    Some("names like `AWS_*`, `*_TOKEN`, `PATH`"),
                ));
            }
            GlobBuilder::new(v)
                .build()
                .map_err(|e| ValueError::new(format!("invalid glob `{v}`: {}", e.kind()), None))?;
            Ok(vec![v.to_string()])
        };
        ctx.edit(&mut p.env_allow, &proc.env_allow, &mut env_glob)?;
        ctx.edit(&mut p.env_deny, &proc.env_deny, &mut env_glob)?;
        for (key, value) in &proc.env_set {
            if !is_env_name(key.get_ref()) {
                return Err(ctx.err(
                    key.span(),
                    format!(
                        "`{}` is not a valid environment variable name",
                        key.get_ref()
                    ),
                    Some("letters, digits and `_`, not starting with a digit".into()),
                ));
            }
            let expanded = expand::expand(value.get_ref(), opts, false)
                .map_err(|e| ctx.value_err(value, 0, e))?;
            p.env_set.insert(key.get_ref().clone(), expanded);
        }
        let limits = proc.rlimits;
        for (rlimit, value) in [
            (Rlimit::Nofile, limits.nofile),
            (Rlimit::Core, limits.core),
            (Rlimit::Cpu, limits.cpu),
            (Rlimit::Fsize, limits.fsize),
            (Rlimit::Stack, limits.stack),
            (Rlimit::Nproc, limits.nproc),
            (Rlimit::As, limits.address_space),
        ] {
            let Some(value) = value else { continue };
            let sized = matches!(
                rlimit,
                Rlimit::Core | Rlimit::Fsize | Rlimit::Stack | Rlimit::As
            );
            let n = parse_limit(value.get_ref(), sized)
                .map_err(|(m, h)| ctx.err(value.span(), m, h))?;
            p.rlimits.insert(rlimit, n);
        }
        if let Some(n) = proc.max_processes {
            let v = u64::try_from(*n.get_ref())
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ctx.err(n.span(), "`max_processes` must be at least 1", None))?;
            p.max_processes = Some(v);
        }
        if let Some(mem) = proc.memory {
            let bytes = match mem.get_ref() {
                IntOrString::Str(s) if s == "unlimited" => Err((
                    "`memory` cannot be `unlimited`".to_string(),
                    Some("leave `memory` out for no cap".to_string()),
                )),
                v => parse_limit(v, true),
            }
            .map_err(|(m, h)| ctx.err(mem.span(), m, h))?;
            if bytes < 1 << 20 {
                return Err(ctx.err(
                    mem.span(),
                    format!("`memory` of {bytes} bytes is too small to run anything"),
                    Some("sizes take a suffix: \"512M\", \"2G\"".into()),
                ));
            }
            p.memory_max = Some(bytes);
        }
        let mut capability = |v: &str| capability_name(v).map(|c| vec![c]);
        ctx.edit(&mut p.capabilities, &proc.capabilities, &mut capability)?;
        if let Some(share) = proc.share_tty {
            p.share_tty = share;
        }
        if let Some(action) = proc.on_violation {
            p.on_violation = match action {
                ViolationToml::Deny => ViolationAction::Deny,
                ViolationToml::Kill => ViolationAction::Kill,
            };
        }

        // [syscalls]
        let sys = file.syscalls;
        let p = &mut self.policy.syscalls;
        ctx.edit(&mut p.deny_groups, &sys.deny_groups, &mut |v| {
            syscall_group(v).map(|g| vec![g])
        })?;
        ctx.edit(&mut p.deny, &sys.deny, &mut |v| {
            syscall_name(v).map(|s| vec![s])
        })?;
        ctx.edit(&mut p.allow, &sys.allow, &mut |v| {
            syscall_name(v).map(|s| vec![s])
        })?;
        if sys.io_uring.is_some() {
            self.io_uring = sys.io_uring;
        }

        // [audit]
        if let Some(log) = file.audit.log {
            let expanded =
                expand::expand(log.get_ref(), opts, true).map_err(|e| ctx.value_err(&log, 0, e))?;
            let (path, note) =
                expand::normalise_path(&expanded).map_err(|e| ctx.value_err(&log, 0, e))?;
            self.notes.extend(note);
            self.policy.audit.log = Some(path);
        }
        if file.audit.format.is_some() {
            self.policy.audit.format = LogFormat::Jsonl;
        }
        Ok(())
    }
}

/// Error helpers bound to the file being applied.
struct Ctx<'s> {
    src: &'s Source,
}

impl Ctx<'_> {
    /// An `unknown = "deny" | "ask"` value; `hint` says what `ask` does there.
    fn unknown(
        &self,
        value: &Spanned<String>,
        hint: &str,
    ) -> Result<crate::policy::Unknown, ProfileError> {
        match value.get_ref().as_str() {
            "deny" => Ok(crate::policy::Unknown::Deny),
            "ask" => Ok(crate::policy::Unknown::Ask),
            other => Err(self.err(
                value.span(),
                format!("`{other}` is not `deny` or `ask`"),
                Some(hint.into()),
            )),
        }
    }

    fn err(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ProfileError {
        ProfileError::at(self.src, span, message, hint)
    }

    /// Point at the part of a string value that `e.range` names when the source spells the value
    /// literally (no escapes); otherwise at the whole value. `skip` counts chars already stripped.
    fn value_err(&self, value: &Spanned<String>, skip: usize, e: ValueError) -> ProfileError {
        let span = value.span();
        let text = &self.src.text;
        let literal_start = span.start + 1;
        let spelled_literally = text
            .get(literal_start..)
            .is_some_and(|rest| rest.starts_with(value.get_ref().as_str()))
            && matches!(text.as_bytes().get(span.start), Some(b'"' | b'\''));
        let span = match (e.range, spelled_literally) {
            (Some(r), true) => literal_start + skip + r.start..literal_start + skip + r.end,
            _ => span,
        };
        ProfileError::at(self.src, span, e.message, e.hint)
    }

    /// Apply one list: append new entries (deduplicated), and remove for each `"!entry"` the
    /// equal inherited entries.
    fn edit<T: PartialEq>(
        &self,
        list: &mut Vec<T>,
        entries: &[Spanned<String>],
        parse: &mut dyn FnMut(&str) -> Result<Vec<T>, ValueError>,
    ) -> Result<(), ProfileError> {
        for entry in entries {
            let raw = entry.get_ref().as_str();
            match raw.strip_prefix('!') {
                Some(target) => {
                    let remove = parse(target).map_err(|e| self.value_err(entry, 1, e))?;
                    let before = list.len();
                    list.retain(|item| !remove.contains(item));
                    if list.len() == before {
                        return Err(self.err(
                            entry.span(),
                            format!("`{raw}` removes nothing"),
                            Some(format!(
                                "no entry inherited through `extends` equals `{target}` once \
                                 resolved; see `agentbox profile show` for the inherited lists"
                            )),
                        ));
                    }
                }
                None => {
                    let items = parse(raw).map_err(|e| self.value_err(entry, 0, e))?;
                    push_unique(list, items);
                }
            }
        }
        Ok(())
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// A deny or protect glob (`kind` names which, for messages): absolute or `**/`-anchored,
/// `..`-free, normalised, plus its symlink-resolved variant.
fn path_glob(
    v: &str,
    kind: &str,
    opts: &LoadOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<DenyGlob>, ValueError> {
    let expanded = expand::expand(v, opts, true)?;
    if !(expanded.starts_with('/') || expanded.starts_with("**/")) {
        return Err(ValueError::new(
            format!("{kind} glob `{expanded}` is not absolute"),
            Some("start it with `/`, `~/`, `${HOME}/`, `${WORKSPACE}/` or `**/` (any directory)"),
        ));
    }
    if expanded.split('/').any(|c| c == "..") {
        return Err(ValueError::new(
            format!("`..` in {kind} glob `{expanded}`"),
            Some("write the pattern without `..`"),
        ));
    }
    // Collapse `//` and `/./` so the pattern matches normalised paths.
    let mut pattern = String::new();
    for part in expanded.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if !pattern.is_empty() || expanded.starts_with('/') {
            pattern.push('/');
        }
        pattern.push_str(part);
    }
    GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| ValueError::new(format!("invalid glob `{pattern}`: {}", e.kind()), None))?;
    let mut out = vec![DenyGlob {
        pattern: pattern.clone(),
    }];
    if let Some(real) = expand::resolved_glob_variant(&pattern) {
        notes.push(format!(
            "{kind} `{pattern}` also applies as `{real}` (symlink resolved)"
        ));
        out.push(DenyGlob { pattern: real });
    }
    Ok(out)
}

/// Numbers, sizes with a binary suffix (`K`, `M`, `G`, `T`; `"512M"`, `"2GiB"`), `"unlimited"`.
fn parse_limit(v: &IntOrString, sized: bool) -> Result<u64, (String, Option<String>)> {
    match v {
        IntOrString::Int(n) => u64::try_from(*n).map_err(|_| (format!("`{n}` is negative"), None)),
        IntOrString::Str(s) if s == "unlimited" => Ok(u64::MAX), // RLIM_INFINITY
        IntOrString::Str(s) => {
            let bad = || {
                let hint = if sized {
                    "write a number, a size like \"512M\" or \"2G\", or \"unlimited\""
                } else {
                    "write a number or \"unlimited\""
                };
                (
                    format!("`{s}` is not a valid limit"),
                    Some(hint.to_string()),
                )
            };
            let t = s.trim();
            let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, suffix) = t.split_at(digits);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let suffix = suffix.trim();
            if !sized && !suffix.is_empty() {
                return Err(bad());
            }
            let unit = suffix.trim_end_matches("iB").trim_end_matches('B');
            let shift = match unit.to_ascii_uppercase().as_str() {
                "" => 0,
                "K" => 10,
                "M" => 20,
                "G" => 30,
                "T" => 40,
                _ => return Err(bad()),
            };
            n.checked_mul(1u64 << shift)
                .ok_or_else(|| (format!("`{s}` is too large"), None))
        }
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn syscall_group(v: &str) -> Result<SyscallGroup, ValueError> {
    let names: Vec<String> = SyscallGroup::ALL
        .iter()
        .map(|g| g.name().to_string())
        .collect();
    if let Some(i) = names.iter().position(|n| n == v) {
        return Ok(SyscallGroup::ALL[i]);
    }
    let list = names.join(", ");
    let hint = match did_you_mean(v, names.iter().map(String::as_str)) {
        Some(best) => format!("did you mean `{best}`? groups: {list}"),
        None => format!("groups: {list}"),
    };
    Err(ValueError {
        range: None,
        message: format!("unknown syscall group `{v}`"),
        hint: Some(hint),
    })
}

/// A syscall name checked against the x86_64 table, so a typo fails `profile check` with its
/// location instead of failing the launch.
fn syscall_name(v: &str) -> Result<String, ValueError> {
    if syscalls::number(v).is_some() {
        return Ok(v.to_string());
    }
    let names: Vec<&str> = syscalls::SYSCALLS.iter().map(|(n, _)| *n).collect();
    let hint = match did_you_mean(v, names.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? names are x86_64 syscalls, see syscalls(2)"),
        None => {
            "names are x86_64 syscalls like `ptrace`, `io_uring_setup`, see syscalls(2)".to_string()
        }
    };
    Err(ValueError {
        range: None,
        message: format!("unknown syscall `{v}`"),
        hint: Some(hint),
    })
}

/// `net_bind_service` / `CAP_NET_BIND_SERVICE` → `CAP_NET_BIND_SERVICE`.
fn capability_name(v: &str) -> Result<String, ValueError> {
    if let Some(nr) = capabilities::number(v) {
        return Ok(capabilities::NAMES[nr as usize].to_string());
    }
    let upper = v.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    let bare_names: Vec<&str> = capabilities::NAMES
        .iter()
        .map(|n| n.trim_start_matches("CAP_"))
        .collect();
    let hint = match did_you_mean(bare, bare_names.iter().copied()) {
        Some(best) => format!("did you mean `CAP_{best}`? see capabilities(7)"),
        None => "see capabilities(7) for the names".to_string(),
    };
    Err(ValueError {
        range: None,
        message: format!("unknown capability `{v}`"),
        hint: Some(hint),
    })
}
