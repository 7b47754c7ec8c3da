//! `agentbox events FILE`: a log read by a person: the process tree, denials grouped by rule
//! with counts, the exit; `--follow` prints a live run's records as they are written.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Seek};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use agent_sandbox::audit::{self, report::RunSummary, Event, ProcessKind, Record};

/// Read an audit log: the process tree, denials grouped by rule with counts, the exit.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
  agentbox events run.jsonl\n  \
  agentbox events --follow ~/.local/state/agentbox/logs/<id>.jsonl\n  \
  agentbox events --filter type=denial --filter layer=landlock --json run.jsonl\n  \
  agentbox events --filter 'rule~network' run.jsonl")]
pub(crate) struct EventsArgs {
    pub file: PathBuf,
    /// Print records as a running sandbox writes them, until its exit record.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only records where FIELD=VALUE (exact) or FIELD~TEXT (contains); fields are the
    /// record's JSON keys, `object.path` style for nested ones. Repeatable (all must match).
    #[arg(long, value_name = "FIELD=VALUE|FIELD~TEXT")]
    pub filter: Vec<String>,
    /// JSON: the matching records, one per line (the summary as one object without --follow).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug)]
struct Filter {
    path: Vec<String>,
    value: String,
    contains: bool,
}

impl Filter {
    fn parse(text: &str) -> anyhow::Result<Filter> {
        let (at, contains) = match (text.find('='), text.find('~')) {
            (Some(e), Some(t)) if t < e => (t, true),
            (Some(e), _) => (e, false),
            (None, Some(t)) => (t, true),
            (None, None) => anyhow::bail!(
                "--filter {text}: write FIELD=VALUE or FIELD~TEXT (type=denial, layer=landlock, \
                 rule~network, object.path~.ssh)"
            ),
        };
        Ok(Filter {
            path: text[..at].split('.').map(str::to_string).collect(),
            value: text[at + 1..].to_string(),
            contains,
        })
    }

    fn matches(&self, record: &serde_json::Value) -> bool {
        let mut v = record;
        for key in &self.path {
            v = &v[key.as_str()];
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return false,
            other => other.to_string(),
        };
        if self.contains {
            text.contains(&self.value)
        } else {
            text == self.value
        }
    }
}

pub(crate) fn exec(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let filters: Vec<Filter> = args
        .filter
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<anyhow::Result<_>>()?;
    let keep = |value: &serde_json::Value| filters.iter().all(|f| f.matches(value));
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    if args.follow {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        return follow(file, &keep, args.json, colour);
    }
    let mut records = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a JSON line", args.file.display()))?;
        if keep(&value) {
            let record: Record = serde_json::from_value(value)
                .with_context(|| format!("{}: not an agentbox record", args.file.display()))?;
            records.push(record);
        }
    }
    let run = RunSummary::from_records(&records);
    if args.json {
        let rules: Vec<serde_json::Value> = run
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({"layer": r.layer, "rule": r.rule, "count": r.count,
                                   "objects": r.objects})
            })
            .collect();
        let summary = serde_json::json!({
            "sandbox": run.sandbox, "profile": run.profile, "command": run.command,
            "processes": tree(&records).len(), "denials": run.denials(), "rules": rules,
            "lost": run.lost, "exit_code": run.code, "signal": run.signal,
        });
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "sandbox {}  profile {}  command {}",
        run.sandbox,
        run.profile,
        audit::sanitize(&run.command.join(" "))
    );
    let procs = tree(&records);
    if !procs.is_empty() {
        println!("\nprocesses:");
        print_tree(&procs, None, 1);
    }
    if !run.rules.is_empty() {
        println!("\ndenials by rule:");
        for r in &run.rules {
            println!(
                "  {:>5}× [{}] {} — {}",
                r.count,
                audit::sanitize(&r.layer),
                audit::sanitize(&r.rule),
                r.objects.join("; ")
            );
        }
    }
    if run.lost > 0 {
        println!("\n{} events lost (counted)", run.lost);
    }
    Ok(ExitCode::SUCCESS)
}

/// pid → (parent, exe, how it ended), from the process records.
type Procs = BTreeMap<i32, (Option<i32>, Option<String>, Option<String>)>;

/// The process tree of a run.
fn tree(records: &[Record]) -> Procs {
    let mut procs: Procs = BTreeMap::new();
    for rec in records {
        if let Event::Process(p) = &rec.event {
            if p.thread {
                continue;
            }
            let entry = procs.entry(p.pid).or_default();
            if entry.0.is_none() {
                entry.0 = p.ppid;
            }
            match p.kind {
                ProcessKind::Exec => entry.1.clone_from(&p.exe),
                ProcessKind::Exit => {
                    entry.2 = Some(match (p.code, p.signal) {
                        (_, Some(sig)) => format!("signal {sig}"),
                        (Some(code), _) => format!("exit {code}"),
                        _ => "exit".into(),
                    })
                }
                _ => {}
            }
        }
    }
    procs
}

fn print_tree(procs: &Procs, parent: Option<i32>, depth: usize) {
    let is_root = |ppid: &Option<i32>| ppid.is_none_or(|p| !procs.contains_key(&p));
    for (pid, (ppid, exe, exit)) in procs {
        let child_of_parent = match parent {
            None => is_root(ppid),
            Some(p) => *ppid == Some(p),
        };
        if !child_of_parent || depth > 64 {
            continue;
        }
        println!(
            "{}{pid} {}{}",
            "  ".repeat(depth),
            audit::sanitize(exe.as_deref().unwrap_or("?")),
            exit.as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        print_tree(procs, Some(*pid), depth + 1);
    }
}

/// Prints each new matching record until the exit record (or the file stops growing for a
/// long time: a supervisor that died).
fn follow(
    file: std::fs::File,
    keep: &dyn Fn(&serde_json::Value) -> bool,
    json: bool,
    colour: bool,
) -> anyhow::Result<ExitCode> {
    let mut reader = std::io::BufReader::new(file);
    let mut pending = String::new();
    let mut idle = Duration::ZERO;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            // A line still being written: keep the part, wait for the rest.
            pending.push_str(&line);
            std::thread::sleep(Duration::from_millis(200));
            idle += Duration::from_millis(200);
            if idle > Duration::from_secs(24 * 3600) {
                return Ok(ExitCode::SUCCESS);
            }
            let pos = reader.stream_position()?;
            reader.seek(std::io::SeekFrom::Start(pos))?;
            continue;
        }
        idle = Duration::ZERO;
        let full = std::mem::take(&mut pending) + &line;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(full.trim_end()) else {
            continue;
        };
        let is_exit = value["type"] == "exit";
        if keep(&value) {
            if json {
                println!("{}", full.trim_end());
            } else if let Ok(record) = serde_json::from_value::<Record>(value) {
                println!("{}", audit::describe(&record, colour));
            }
        }
        if is_exit {
            return Ok(ExitCode::SUCCESS);
        }
    }
}
