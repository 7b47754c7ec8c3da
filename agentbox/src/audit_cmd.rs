use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use agent_sandbox::audit::{self, Event, Record};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCmd {
    /// Check a log's hash chain, sequence numbers, schema version and sandbox id.
    ///
    /// Prints `ok: N records, sandbox ID, denials: N` and exits 0, or names the first bad line
    /// and exits 1.
    #[command(
        after_help = "Examples:\n  agentbox audit verify run.jsonl\n  agentbox audit verify run.jsonl --head 3f2a...   # the head recorded elsewhere"
    )]
    Verify {
        file: PathBuf,
        /// Also require this chain head (hex SHA-256 of the last line, as `verify` prints it,
        /// recorded elsewhere): catches truncation and a rewritten last line.
        #[arg(long, value_name = "SHA256")]
        head: Option<String>,
    },
    /// Print a log human-readably, one line per record; checks the chain too.
    #[command(
        after_help = "Examples:\n  agentbox audit show run.jsonl\n  agentbox audit show run.jsonl --denials"
    )]
    Show {
        file: PathBuf,
        /// Only denial records.
        #[arg(long)]
        denials: bool,
    },
}

pub(crate) fn exec(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { file, head } => Ok(verify(&file, head.as_deref())),
        AuditCmd::Show { file, denials } => show(&file, denials),
    }
}

fn verify(file: &std::path::Path, head: Option<&str>) -> ExitCode {
    let result = match head {
        Some(h) => audit::verify_with_head(file, h),
        None => audit::verify(file),
    };
    match result {
        Ok(r) => {
            println!(
                "ok: {} records, sandbox {}, denials: {}",
                r.records, r.sandbox, r.denials
            );
            println!("head: {}", r.head);
            if r.lost > 0 {
                println!(
                    "warning: {} events were lost at the source (see loss records)",
                    r.lost
                );
            }
            if !r.complete {
                println!("note: no exit record at the end: the run is still going, the supervisor died, or the log was cut at a line boundary");
            }
            for w in &r.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentbox: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn show(file: &std::path::Path, only_denials: bool) -> anyhow::Result<ExitCode> {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("read {}", file.display()))?;
        let rec: Record = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("agentbox: line {}: unreadable record: {e}", i + 1);
                continue;
            }
        };
        if only_denials && !matches!(rec.event, Event::Denial(_)) {
            continue;
        }
        println!(
            "{:>5} {} {}",
            rec.seq,
            rec.ts,
            audit::describe(&rec, colour)
        );
    }
    // Showing is for reading; still say loudly when the log does not verify.
    match audit::verify(file) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("agentbox: {}: does not verify: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
