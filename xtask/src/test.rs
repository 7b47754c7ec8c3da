//! `cargo xtask test`: the whole chain CI runs, one step after another, stopping at the first
//! failure. The last line is always `xtask: N passed, M failed` (CI parsers read it).

use crate::{cargo, elapsed, fuzz, run, setup, vm, Res};
use std::time::Instant;

const STEPS: &[&str] = &["setup", "fmt", "clippy", "test", "fuzz", "vm"];

pub(crate) fn test(args: &[String]) -> Res<()> {
    let mut no_vm = false;
    let mut only: Option<String> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-vm" => no_vm = true,
            "--only" => {
                let step = args.next().ok_or("--only needs a STEP")?;
                if !STEPS.contains(&step.as_str()) {
                    return Err(format!(
                        "unknown step `{step}`; steps: {}",
                        STEPS.join(", ")
                    ));
                }
                only = Some(step.clone());
            }
            other => {
                return Err(format!(
                    "unknown option `{other}`; usage: cargo xtask test [--no-vm] [--only STEP] \
                     (steps: {})",
                    STEPS.join(", ")
                ))
            }
        }
    }

    let selected: Vec<&str> = STEPS
        .iter()
        .copied()
        .filter(|step| only.as_deref().is_none_or(|o| o == *step))
        .filter(|step| !(no_vm && *step == "vm"))
        .collect();

    let total = Instant::now();
    let mut passed = 0;
    for step in &selected {
        println!("\n==== xtask test: {step} ====");
        let start = Instant::now();
        let result = run_step(step);
        match result {
            Ok(()) => {
                println!("==== {step}: ok ({})", elapsed(start));
                passed += 1;
            }
            Err(message) => {
                println!("==== {step}: FAILED ({})", elapsed(start));
                eprintln!("xtask: error: step `{step}` failed: {message}");
                // The summary stays the very last line, after the error (CI parsers read it).
                println!("xtask: {passed} passed, 1 failed");
                return Err(String::new());
            }
        }
    }
    println!("\nall steps passed in {}", elapsed(total));
    println!("xtask: {passed} passed, 0 failed");
    Ok(())
}

fn run_step(step: &str) -> Res<()> {
    match step {
        "setup" => setup::setup(),
        "fmt" => run(cargo().args(["fmt", "--all", "--", "--check"])),
        "clippy" => {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The VM tier has `test = false`, so --all-targets skips it: lint it explicitly.
            run(cargo().args([
                "clippy",
                "-p",
                "agentbox-tests",
                "--test",
                "vm",
                "--",
                "-D",
                "warnings",
            ]))
        }
        // The integration tests run the `agentbox` binary of another package, which `cargo
        // test` would not rebuild: build it first so no test runs a stale (or missing) binary.
        "test" => run(cargo().args(["build", "-p", "agentbox", "--bin", "agentbox"]))
            .and_then(|()| run(cargo().args(["test", "--workspace"])))
            .and_then(|()| dogfood()),
        // Bounded: each target for 60 s (AGENTBOX_FUZZ_SECS); longer with `cargo xtask fuzz`.
        "fuzz" => fuzz::test_step(),
        "vm" => vm::vm_test(&vm::Options::default()),
        _ => unreachable!("steps are validated against STEPS"),
    }
}

/// One check of this pipeline runs under agentbox itself, as a user's CI would: the format
/// check under the `rust` profile, failing on any denial, with a JUnit report in target/.
fn dogfood() -> Res<()> {
    let agentbox = std::path::Path::new("target/debug/agentbox");
    let mut cmd = std::process::Command::new(agentbox);
    cmd.args([
        "run",
        "--profile",
        "rust",
        "--report",
        "junit:target/agentbox-dogfood.xml",
        "--fail-on-denial",
        "--",
    ]);
    cmd.arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["fmt", "--all", "--", "--check"]);
    run(&mut cmd)
}
