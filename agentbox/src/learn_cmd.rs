//! `agentbox learn`: run a command in audit mode and write the smallest profile that would
//! have let it run without denials, extending the base it started from.
//!
//! Landlock cannot log without denying, so a run refused a file is run again with what was
//! learned so far, until a run needs nothing new (`--rounds`). Each round is an ordinary
//! `agentbox run` of this binary: the same layers, the same audit records.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

use agent_sandbox::audit::learn::Learned;
use agent_sandbox::audit::Denial;
use agent_sandbox::profile::{self, LoadOptions};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    agentbox learn -o agent.toml -- python3 agent.py\n  \
    agentbox learn --profile python --diff -o ci.toml -- pytest -q\n  \
    agentbox run --profile ./agent.toml -- python3 agent.py   # then enforce it")]
pub(crate) struct LearnArgs {
    /// The profile to start from (a built-in name or a file); the learned profile extends it.
    #[arg(long, default_value = "default")]
    profile: String,

    /// Where to write the learned profile (refused if it exists, unless --force).
    #[arg(short = 'o', long = "output", value_name = "NEW.toml")]
    output: PathBuf,

    /// Overwrite the output file.
    #[arg(long)]
    force: bool,

    /// Also print what the learned profile changes against the base, as `profile diff`.
    #[arg(long)]
    diff: bool,

    /// Runs at most: Landlock denies even in audit mode, so a run refused a file is run
    /// again with it granted, until a run needs nothing new.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,

    /// The command to learn, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(crate) fn exec(args: LearnArgs) -> anyhow::Result<ExitCode> {
    if args.output.exists() && !args.force {
        bail!(
            "{} exists: choose another -o, or --force to replace it",
            args.output.display()
        );
    }
    let opts = LoadOptions::from_env()?;
    // The base must load; a file is named by its absolute path so the learned profile can
    // live anywhere.
    profile::load(&args.profile, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = if args.profile.contains('/') || args.profile.ends_with(".toml") {
        std::fs::canonicalize(&args.profile)?
            .to_string_lossy()
            .into_owned()
    } else {
        args.profile.clone()
    };
    let work = std::env::temp_dir().join(format!("agentbox-learn-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .with_context(|| format!("creating {}", work.display()))?;
    let shown_cmd = args
        .command
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            // Quoted where a shell would need it, so a multi-line `-c` stays on one line.
            if a.chars()
                .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
            {
                format!("{a:?}")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut learned = Learned::default();
    let mut last_status = None;
    let mut rounds = 0;
    for round in 1..=args.rounds {
        rounds = round;
        let trial = work.join(format!("round-{round}.toml"));
        std::fs::write(
            &trial,
            learned.profile(&base, "agentbox learn: this round's profile", true),
        )?;
        let log = work.join(format!("round-{round}.jsonl"));
        eprintln!("agentbox learn: round {round}: {shown_cmd}");
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("-q")
            .arg("--profile")
            .arg(&trial)
            .arg("--log")
            .arg(&log)
            .arg("--")
            .args(&args.command)
            .status()
            .context("starting agentbox run")?;
        last_status = Some(status);
        let (denials, blind) = read_log(&log)?;
        if round == 1 {
            for what in &blind {
                eprintln!("agentbox learn: not seen here: {what}");
            }
        }
        let mut new = 0;
        learned.begin_round();
        for d in &denials {
            if learned.add(d, &opts.home) {
                new += 1;
            }
        }
        eprintln!(
            "agentbox learn: round {round}: {} denials, {new} new entries ({status})",
            denials.len()
        );
        if new == 0 {
            break;
        }
        if round == args.rounds {
            eprintln!(
                "agentbox learn: still learning after {round} rounds: the profile may need more \
                 (--rounds)"
            );
        }
    }
    let header = format!(
        "Learned by `agentbox learn` ({rounds} rounds) from:\n  {shown_cmd}\n\
         Review it before use: it allows what that run did, nothing it was not seen doing."
    );
    std::fs::write(&args.output, learned.profile(&base, &header, false))
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "agentbox learn: wrote {} ({} read, {} write, {} exec, {} network, {} not learned); \
         round logs in {}",
        args.output.display(),
        learned.read.len(),
        learned.write.len(),
        learned.exec.len(),
        learned.net.len() + learned.bind.len() + learned.unix.len(),
        learned.notes.len(),
        work.display()
    );
    for r in 1..=rounds {
        let _ = std::fs::remove_file(work.join(format!("round-{r}.toml")));
    }
    if let Some(status) = last_status.filter(|s| !s.success()) {
        eprintln!("agentbox learn: the last round's command failed ({status})");
    }
    if args.diff {
        let old = profile::load(&args.profile, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let output = args.output.to_string_lossy();
        let new = profile::load(&output, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("--- {}\n+++ {}", args.profile, output);
        for line in profile::diff(&old, &new) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The denials of one run's log, and what that run could not report (a guarantee about
/// logging it did not hold), from its launch record.
fn read_log(log: &Path) -> anyhow::Result<(Vec<Denial>, Vec<String>)> {
    let file = std::fs::File::open(log).with_context(|| format!("reading {}", log.display()))?;
    let mut denials = Vec::new();
    let mut blind = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match record["type"].as_str() {
            Some("denial") => {
                if let Ok(d) = serde_json::from_value::<Denial>(record) {
                    denials.push(d);
                }
            }
            Some("launch") => blind.extend(unlogged(&record)),
            _ => {}
        }
    }
    Ok((denials, blind))
}

/// The launch record's logging guarantees that do not hold here, with why.
fn unlogged(launch: &serde_json::Value) -> Vec<String> {
    let Some(guarantees) = launch["guarantees"].as_array() else {
        return Vec::new();
    };
    guarantees
        .iter()
        .filter(|g| {
            g["guarantee"]
                .as_str()
                .is_some_and(|n| n.ends_with("-logged"))
                && g["enforced"] == false
        })
        .map(|g| {
            format!(
                "{} ({})",
                g["guarantee"].as_str().unwrap_or("?"),
                g["reason"].as_str().unwrap_or("not enforced")
            )
        })
        .collect()
}
