//! agentbox developer tasks. Run `cargo xtask help`.
//!
//! std + serde_json only, so it compiles in seconds on a fresh machine.

mod bench;
mod cpio;
mod demo;
mod fuzz;
mod kernels;
mod security_doc;
mod setup;
mod test;
mod vm;
mod vm_systemd;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Errors are messages for the developer; `main` prints them as `xtask: error: ...`.
pub type Res<T> = Result<T, String>;

const TASKS: &[(&str, &str)] = &[
    (
        "setup",
        "install every prerequisite (Debian packages, rustup components), idempotently",
    ),
    (
        "test [--no-vm] [--only STEP]",
        "setup, fmt, clippy, cargo test, VM tier; stops at the first failure",
    ),
    (
        "vm-test [--timeout SECS] [--kernel 6.1|6.12] [FILTER...]",
        "build the VM-tier tests and run them in qemu guests (6.1, 6.12) with BPF LSM, then systemd",
    ),
    (
        "security-doc",
        "rewrite docs/security.md's VM table from the last vm-test's consoles (one column per kernel)",
    ),
    (
        "fuzz (TARGET|--all) [--time SECS]",
        "libFuzzer on the profile parser and the audit-log verifier (stable toolchain)",
    ),
    (
        "doctor [ARGS]",
        "build agentbox and run `agentbox doctor ARGS`",
    ),
    (
        "demo",
        "setup, then run examples/agent.py under the default profile in a throwaway HOME",
    ),
    (
        "bench [--quick] [--out FILE]",
        "agentbox vs bare, bwrap, firejail; regenerates docs/benchmarks.md (root)",
    ),
    ("help", "this list"),
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "help".into());
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "setup" => setup::setup(),
        "test" => test::test(&rest),
        "vm-test" => vm::vm_test_cli(&rest),
        "security-doc" => security_doc::security_doc(),
        "doctor" => return doctor(&rest),
        "fuzz" => fuzz::fuzz_cli(&rest),
        "demo" => demo::demo(),
        "bench" => bench::bench(&rest),
        "help" | "-h" | "--help" => {
            help();
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown task `{other}`\n");
            help();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Empty: the task already reported the failure itself.
            if !message.is_empty() {
                eprintln!("xtask: error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn help() {
    println!("usage: cargo xtask <task> [args]\n\ntasks:");
    for (task, what) in TASKS {
        println!("  {task:<38} {what}");
    }
}

fn doctor(args: &[String]) -> ExitCode {
    run_agentbox("doctor", args)
}

fn run_agentbox(subcommand: &str, args: &[String]) -> ExitCode {
    let binary = match build_agentbox() {
        Ok(binary) => binary,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    match Command::new(&binary).arg(subcommand).args(args).status() {
        // Pass agentbox's own exit code through: scripts read it.
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(e) => {
            eprintln!("xtask: error: {}: {e}", binary.display());
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
}

/// A `cargo` command run from the workspace root, using the cargo that invoked us.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs `command` with inherited stdio, echoing it first; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Res<()> {
    let shown = show(command);
    println!("$ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

pub fn show(command: &Command) -> String {
    let mut shown = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

/// Runs a cargo build with JSON messages (diagnostics still rendered for humans) and returns
/// the executables of the artifacts that `pick` accepts.
pub fn cargo_executables(
    args: &[&str],
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Res<Vec<PathBuf>> {
    let mut command = cargo();
    command
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        // output() would capture stderr too: the developer must see compile errors.
        .stderr(Stdio::inherit());
    let shown = show(&command);
    println!("$ {shown}");
    let output = command
        .output()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if !output.status.success() {
        return Err(format!("`{shown}` failed ({})", output.status));
    }
    let mut executables = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || !pick(&message) {
            continue;
        }
        if let Some(executable) = message["executable"].as_str() {
            executables.push(PathBuf::from(executable));
        }
    }
    Ok(executables)
}

/// Builds the `agentbox` binary and returns its path.
pub fn build_agentbox() -> Res<PathBuf> {
    let executables = cargo_executables(&["build", "-p", "agentbox", "--bin", "agentbox"], |m| {
        m["target"]["name"] == "agentbox"
    })?;
    executables
        .into_iter()
        .next()
        .ok_or_else(|| "cargo built no `agentbox` executable".into())
}

/// The cargo target directory (honours CARGO_TARGET_DIR and config via `cargo metadata`).
pub fn target_dir() -> Res<PathBuf> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed ({})", output.status));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata: bad JSON: {e}"))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata has no target_directory".into())
}

/// Formats an elapsed time the way every step header reports it.
pub fn elapsed(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}
