//! The profile file format as serde types: exactly what a user may write, nothing resolved.
//!
//! Kept apart from `policy::Policy` on purpose: these types carry spans (for errors), accept
//! removal entries (`"!..."`) and unresolved variables, and generate the JSON Schema; `Policy` is
//! the resolved result the layers consume.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::policy::SyscallGroup;

/// `extends = "one"` or `extends = ["one", "two"]` (errors point at the whole value).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Extends {
    One(String),
    Many(Vec<String>),
}

/// Each parent named by `extends`, with the span of the value that names it.
pub(crate) fn parents(extends: &Spanned<Extends>) -> Vec<Spanned<String>> {
    let span = extends.span();
    let names = match extends.get_ref() {
        Extends::One(one) => vec![one.clone()],
        Extends::Many(many) => many.clone(),
    };
    names
        .into_iter()
        .map(|name| Spanned::new(span.clone(), name))
        .collect()
}

/// The schema of `extends`: a name or a list of names.
fn extends_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string" },
            { "type": "array", "items": { "type": "string" } }
        ]
    })
}

/// A list entry: a value, or `"!value"` to remove an entry inherited through `extends`.
pub(crate) type Entries = Vec<Spanned<String>>;

/// An agentbox sandbox profile.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agentbox profile")]
pub(crate) struct ProfileFile {
    /// Profile(s) to start from: a built-in name (`default`), a file path relative to this
    /// file, or a list of them (`["python", "node"]`, applied in order, a shared ancestor
    /// once). Scalars set here override them; lists append (`"!entry"` removes an inherited
    /// entry).
    #[schemars(schema_with = "extends_schema")]
    pub extends: Option<Spanned<Extends>>,
    /// One line saying what this profile is for.
    pub description: Option<String>,
    /// `enforce` (deny and log) or `audit` (log what would be denied, where a layer can).
    pub mode: Option<ModeToml>,
    #[serde(default)]
    pub filesystem: FilesystemToml,
    #[serde(default)]
    pub network: NetworkToml,
    #[serde(default)]
    pub process: ProcessToml,
    #[serde(default)]
    pub syscalls: SyscallsToml,
    #[serde(default)]
    pub audit: AuditToml,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModeToml {
    Enforce,
    Audit,
}

/// Paths are absolute after expansion: `/usr`, `~/.cache/pip`, `${WORKSPACE}/out`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesystemToml {
    /// Trees the agent may read (and list).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub read: Entries,
    /// Trees the agent may read and write.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub write: Entries,
    /// Trees from which the agent may execute files.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exec: Entries,
    /// Globs that stay unreachable even inside an allowed tree: `~/.ssh/**`, `**/.env`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Entries,
    /// Globs that stay readable but never writable, even inside a writable tree (no write,
    /// truncate, create, delete or rename inside): `**/.git/hooks`, `**/.envrc`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub protect: Entries,
    /// Milliseconds the launch may spend searching the allowed trees for deny and protect
    /// matches where the kernel cannot judge them by name (no BPF LSM); what the search
    /// does not reach is named in the launch record. Default 2.
    #[schemars(with = "Option<i64>")]
    pub search_ms: Option<Spanned<i64>>,
    /// A read of a file no tree allows and no deny glob names: `"deny"` (the default) or
    /// `"ask"` (held until the approver decides: `agentbox run --approver`). Writes outside
    /// the write trees are never asked: the sandbox's view mounts them read-only.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub unknown: Option<Spanned<String>>,
    /// Running a readable file outside the exec trees: `"deny"` (the default) or `"ask"`
    /// (held until the approver decides; needs BPF LSM, which makes the approval a kernel
    /// rule for that file before the exec continues).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub exec_unknown: Option<Spanned<String>>,
}

/// Entries are `host-or-cidr:port-or-range`: `*:443`, `10.0.0.0/8:*`, `[::1]:8000-8100`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkToml {
    /// Destinations the agent may connect or send to. Empty: no network.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Entries,
    /// Destinations always denied, even when `allow` covers them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Entries,
    /// Ports (`8080`) or ranges (`"8000-8100"`) the agent may bind and listen on.
    #[serde(default)]
    #[schemars(with = "Vec<IntOrString>")]
    pub bind: Vec<Spanned<IntOrString>>,
    /// Pathname UNIX sockets the agent may connect to beyond those inside its write trees:
    /// absolute globs matched against the socket the path resolves to, e.g.
    /// `"/run/user/*/bus"`, `"~/.ssh/agent.sock"`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub unix: Entries,
    /// The resolver agentbox forwards allowed host names to (`"IP:PORT"`); default: the
    /// host's first nameserver in /etc/resolv.conf.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dns_upstream: Option<Spanned<String>>,
    /// A connection no entry allows or denies: `"deny"` (the default) or `"ask"` (held until
    /// the approver decides: `agentbox run --approver`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub unknown: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessToml {
    /// Environment variable name globs to keep. Empty: keep everything not denied.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub env_allow: Entries,
    /// Environment variable name globs to scrub (wins over `env_allow`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub env_deny: Entries,
    /// Variables set for the agent; values expand `${HOME}`, `${WORKSPACE}`, ...
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env_set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Resource limits (soft = hard).
    #[serde(default)]
    pub rlimits: RlimitsToml,
    /// Cap on tasks (processes and threads) in the sandbox.
    #[schemars(with = "Option<u64>", range(min = 1))]
    pub max_processes: Option<Spanned<i64>>,
    /// Cap on memory: bytes, or a size like `"512M"`, `"2G"`.
    #[schemars(with = "Option<IntOrString>")]
    pub memory: Option<Spanned<IntOrString>>,
    /// Capabilities granted by name (`CAP_NET_BIND_SERVICE` or `net_bind_service`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub capabilities: Entries,
    /// Keep the user's terminal (keystroke-injection ioctls stay filtered).
    pub share_tty: Option<bool>,
    /// `deny` the operation, or `kill` the process that attempted it.
    pub on_violation: Option<ViolationToml>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ViolationToml {
    Deny,
    Kill,
}

/// Each limit: a number, a size (`"1G"`, for core/fsize/stack/as) or `"unlimited"`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RlimitsToml {
    #[schemars(with = "Option<IntOrString>")]
    pub nofile: Option<Spanned<IntOrString>>,
    #[schemars(with = "Option<IntOrString>")]
    pub core: Option<Spanned<IntOrString>>,
    #[schemars(with = "Option<IntOrString>")]
    pub cpu: Option<Spanned<IntOrString>>,
    #[schemars(with = "Option<IntOrString>")]
    pub fsize: Option<Spanned<IntOrString>>,
    #[schemars(with = "Option<IntOrString>")]
    pub stack: Option<Spanned<IntOrString>>,
    #[schemars(with = "Option<IntOrString>")]
    pub nproc: Option<Spanned<IntOrString>>,
    #[serde(rename = "as")]
    #[schemars(rename = "as", with = "Option<IntOrString>")]
    pub address_space: Option<Spanned<IntOrString>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyscallsToml {
    /// Groups of syscalls denied together.
    #[serde(default)]
    #[schemars(schema_with = "syscall_groups_schema")]
    pub deny_groups: Entries,
    /// Extra syscalls denied by name.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Entries,
    /// Syscalls allowed by name even if a group denies them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Entries,
    /// Allow io_uring (default false: the `io-uring` group is always denied).
    pub io_uring: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditToml {
    /// Audit log path. Unset: a per-run file under agentbox's state directory.
    #[schemars(with = "Option<String>")]
    pub log: Option<Spanned<String>>,
    /// Log format; `jsonl` (hash-chained JSON lines) is the only one.
    pub format: Option<FormatToml>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FormatToml {
    Jsonl,
}

/// A TOML integer or string: sizes (`1073741824` or `"1G"`) and ports (`8080` or `"8000-8100"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntegerOrString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "string"] })
    }
}

fn syscall_groups_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<String> = SyscallGroup::ALL
        .iter()
        .map(|g| g.name().to_string())
        .collect();
    let removals: Vec<String> = names.iter().map(|n| format!("!{n}")).collect();
    let all: Vec<String> = names.into_iter().chain(removals).collect();
    json_schema!({ "type": "array", "items": { "type": "string", "enum": all } })
}
