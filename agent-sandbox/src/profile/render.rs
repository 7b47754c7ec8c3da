//! A resolved `Policy` written back as a standalone profile (no `extends`, variables expanded),
//! for `agentbox profile show`. Loading the output gives the same policy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::{Mode, Policy, ViolationAction};

#[derive(Serialize)]
struct Shown<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    mode: &'static str,
    filesystem: ShownFs,
    network: ShownNet,
    process: ShownProcess<'a>,
    syscalls: ShownSyscalls<'a>,
    audit: ShownAudit,
}

#[derive(Serialize)]
struct ShownFs {
    read: Vec<String>,
    write: Vec<String>,
    exec: Vec<String>,
    deny: Vec<String>,
    protect: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    search_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec_unknown: Option<&'static str>,
}

#[derive(Serialize)]
struct ShownNet {
    allow: Vec<String>,
    deny: Vec<String>,
    bind: Vec<String>,
    unix: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'static str>,
}

#[derive(Serialize)]
struct ShownProcess<'a> {
    env_allow: &'a [String],
    env_deny: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_processes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<toml::Value>,
    capabilities: &'a [String],
    share_tty: bool,
    on_violation: &'static str,
    env_set: &'a BTreeMap<String, String>,
    rlimits: BTreeMap<String, toml::Value>,
}

#[derive(Serialize)]
struct ShownSyscalls<'a> {
    deny_groups: Vec<String>,
    deny: &'a [String],
    allow: &'a [String],
    io_uring: bool,
}

#[derive(Serialize)]
struct ShownAudit {
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    format: &'static str,
}

/// u64 values that TOML's signed integers cannot hold are written as strings.
fn number(n: u64) -> toml::Value {
    if n == u64::MAX {
        return toml::Value::String("unlimited".into()); // RLIM_INFINITY
    }
    i64::try_from(n).map_or_else(|_| toml::Value::String(n.to_string()), toml::Value::Integer)
}

fn paths(list: &[std::path::PathBuf]) -> Vec<String> {
    list.iter().map(|p| p.display().to_string()).collect()
}

/// Render `policy` as profile TOML. `description` and `notes` become the header.
pub fn to_toml(policy: &Policy, description: Option<&str>, notes: &[String]) -> String {
    let fs = &policy.filesystem;
    let net = &policy.network;
    let proc = &policy.process;
    let sys = &policy.syscalls;
    let shown = Shown {
        description,
        mode: match policy.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        },
        filesystem: ShownFs {
            read: paths(&fs.read),
            write: paths(&fs.write),
            exec: paths(&fs.exec),
            deny: fs.deny.iter().map(|d| d.pattern.clone()).collect(),
            protect: fs.protect.iter().map(|d| d.pattern.clone()).collect(),
            search_ms: fs.search_ms,
            unknown: (fs.unknown == crate::policy::Unknown::Ask).then_some("ask"),
            exec_unknown: (fs.exec_unknown == crate::policy::Unknown::Ask).then_some("ask"),
        },
        network: ShownNet {
            // Host names after addresses: the same list in the profile's syntax.
            allow: net
                .allow
                .iter()
                .map(|r| format!("{r:#}"))
                .chain(net.domains.iter().map(ToString::to_string))
                .collect(),
            deny: net.deny.iter().map(|r| format!("{r:#}")).collect(),
            bind: net.bind.iter().map(ToString::to_string).collect(),
            unix: net.unix.clone(),
            dns_upstream: net.dns_upstream.map(|a| a.to_string()),
            unknown: (net.unknown == crate::policy::Unknown::Ask).then_some("ask"),
        },
        process: ShownProcess {
            env_allow: &proc.env_allow,
            env_deny: &proc.env_deny,
            max_processes: proc.max_processes.and_then(|n| i64::try_from(n).ok()),
            memory: proc.memory_max.map(number),
            capabilities: &proc.capabilities,
            share_tty: proc.share_tty,
            on_violation: match proc.on_violation {
                ViolationAction::Deny => "deny",
                ViolationAction::Kill => "kill",
            },
            env_set: &proc.env_set,
            rlimits: proc
                .rlimits
                .iter()
                .map(|(k, v)| (rlimit_name(*k), number(*v)))
                .collect(),
        },
        syscalls: ShownSyscalls {
            deny_groups: sys
                .deny_groups
                .iter()
                .map(|g| g.name().to_string())
                .collect(),
            deny: &sys.deny,
            allow: &sys.allow,
            io_uring: !sys
                .deny_groups
                .contains(&crate::policy::SyscallGroup::IoUring),
        },
        audit: ShownAudit {
            log: policy.audit.log.as_ref().map(|p| p.display().to_string()),
            format: "jsonl",
        },
    };
    let mut out = format!("# Profile `{}`, fully resolved.\n", policy.name);
    for note in notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    out.push('\n');
    out.push_str(&toml::to_string_pretty(&shown).expect("a resolved profile serialises"));
    out
}

fn rlimit_name(r: crate::policy::Rlimit) -> String {
    match serde_json::to_value(r) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("Rlimit serialises as a string"),
    }
}
