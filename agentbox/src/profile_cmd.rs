//! `agentbox profile ...`: list, show, check profiles; print the JSON Schema.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

use agent_sandbox::profile::{self, LoadOptions};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProfileCmd {
    /// List the built-in profiles with their descriptions.
    #[command(after_help = "Example:\n  agentbox profile list")]
    List,
    /// Print a profile fully resolved (extends applied, variables expanded).
    #[command(
        after_help = "Examples:\n  agentbox profile show default\n  agentbox profile show ./my.toml --json"
    )]
    Show {
        /// A built-in name (`default`) or a file (`./my.toml`).
        profile: String,
        /// Print the resolved policy as JSON instead of profile TOML.
        #[arg(long)]
        json: bool,
    },
    /// Check a profile: print `ok`, or the error and exit 1.
    #[command(
        after_help = "Example:\n  agentbox profile check ./my.toml   # my.toml:4:9: ... with a hint"
    )]
    Check {
        /// A profile file (or a built-in name).
        profile: String,
    },
    /// Show what changing one profile for another changes, entry by entry, both fully
    /// resolved (`+` added, `-` removed, `~` changed). Exit 0 when they enforce the same, 1
    /// when they differ, 2 when one does not load: a check for a pull request.
    #[command(
        after_help = "Example:\n  agentbox profile diff default ./my.toml\n  + network.allow \"pypi.org:443\"\n  - filesystem.write \"~/.cache\""
    )]
    Diff {
        /// The profile before (a built-in name or a file).
        old: String,
        /// The profile after.
        new: String,
    },
    /// Print the JSON Schema of the profile format (for editors and linters).
    #[command(after_help = "Example:\n  agentbox profile schema > .vscode/agentbox.schema.json")]
    Schema,
}

pub(crate) fn exec(cmd: ProfileCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfileCmd::List => {
            let opts = LoadOptions::from_env()?;
            let width = profile::builtin_names()
                .iter()
                .map(|n| n.len())
                .max()
                .unwrap_or(0);
            for name in profile::builtin_names() {
                let loaded = profile::load_with_notes(name, &opts)
                    .with_context(|| format!("built-in profile `{name}`"))?;
                let description = loaded.description.unwrap_or_default();
                out(&format!("{name:<width$}  {description}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfileCmd::Show {
            profile: spec,
            json,
        } => {
            let opts = LoadOptions::from_env()?;
            let loaded = match profile::load_with_notes(&spec, &opts) {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("{err}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if json {
                out(&(serde_json::to_string_pretty(&loaded.policy)? + "\n"))?;
            } else {
                let description = loaded.description.as_deref();
                out(&profile::to_toml(
                    &loaded.policy,
                    description,
                    &loaded.notes,
                ))?;
                out(&workspace_approvals(&opts))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfileCmd::Check { profile: spec } => {
            let opts = LoadOptions::from_env()?;
            match profile::load_with_notes(&spec, &opts) {
                Ok(loaded) => {
                    for note in &loaded.notes {
                        eprintln!("note: {note}");
                    }
                    out(&format!("ok: {spec}\n"))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("{err}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ProfileCmd::Diff { old, new } => {
            let opts = LoadOptions::from_env()?;
            let load = |spec: &str| profile::load(spec, &opts);
            let (old_policy, new_policy) = match (load(&old), load(&new)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let lines = profile::diff(&old_policy, &new_policy);
            if lines.is_empty() {
                eprintln!("{old} and {new} enforce the same");
                return Ok(ExitCode::SUCCESS);
            }
            out(&format!("--- {old}\n+++ {new}\n"))?;
            for line in lines {
                out(&format!("{line}\n"))?;
            }
            Ok(ExitCode::from(1))
        }
        ProfileCmd::Schema => {
            out(&profile::json_schema())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The approvals earlier runs kept for this workspace (a TOML comment block; nothing when
/// there are none): runs here that ask start with them.
fn workspace_approvals(opts: &LoadOptions) -> String {
    use agent_sandbox::approval::{store::show_time, WorkspaceApprovals};
    let store = WorkspaceApprovals::for_workspace(&opts.home, &opts.workspace);
    let approved = match store.load() {
        Ok(a) if a.is_empty() => return String::new(),
        Ok(a) => a,
        Err(e) => return format!("\n# workspace approvals: {e:#}\n"),
    };
    let mut text = format!(
        "\n# Approved for this workspace ({}) during earlier runs; runs here with --ask start\n\
         # with them. Kept in {} (delete an entry to revoke it).\n",
        store.workspace().display(),
        store.path().display()
    );
    for a in approved {
        let until = a.until.map_or_else(
            || "no expiry".to_string(),
            |u| format!("until {}", show_time(u)),
        );
        text.push_str(&format!(
            "#   {}  by {}, {}, {until}\n",
            a.destination,
            a.by,
            show_time(a.at)
        ));
    }
    text
}

/// Write to stdout; a closed pipe (`agentbox profile show | head`) is not an error.
fn out(text: &str) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
