//! `cargo xtask fuzz`: libFuzzer (cargo-fuzz) on the parsers that read untrusted bytes, on
//! the stable toolchain.
//!
//! cargo-fuzz asks for nightly because it passes `-Zsanitizer=address` and other `-Z` flags.
//! No nightly can be installed on these machines (only crates.io and Debian are reachable), so:
//! - `RUSTC_BOOTSTRAP=1` lets stable rustc accept the few unstable flags cargo-fuzz still
//!   passes with the sanitizer off (the standard escape hatch the Rust project uses to build
//!   itself; it changes no code generation);
//! - `--sanitizer none`: AddressSanitizer needs a nightly-only instrumented std. The targets
//!   are safe Rust, so what fuzzing must find here is panics, hangs and unbounded memory,
//!   which libFuzzer catches without ASan (`-timeout`, `-rss_limit_mb`).

use std::path::Path;
use std::process::Command;

use crate::{root, run, Res};

/// The fuzz targets (fuzz/fuzz_targets/*.rs).
pub(crate) const TARGETS: &[&str] = &["profile_load", "audit_verify"];

/// Seconds per target in `cargo xtask test` (override with AGENTBOX_FUZZ_SECS).
const TEST_SECS: u64 = 60;

/// `cargo install cargo-fuzz --locked`, unless `cargo fuzz` already runs.
pub(crate) fn setup_cargo_fuzz() -> Res<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `cargo xtask fuzz TARGET [--time SECS]`, or `--all`.
pub(crate) fn fuzz_cli(args: &[String]) -> Res<()> {
    let mut targets: Vec<String> = Vec::new();
    let mut secs = TEST_SECS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                let v = args.next().ok_or("--time needs SECS")?;
                secs = v
                    .parse()
                    .map_err(|_| format!("--time: `{v}` is not a number of seconds"))?;
            }
            "--all" => targets.extend(TARGETS.iter().map(|t| t.to_string())),
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "unknown fuzz target or option `{other}`; usage: cargo xtask fuzz \
                     (TARGET|--all) [--time SECS]; targets: {}",
                    TARGETS.join(", ")
                ))
            }
        }
    }
    if targets.is_empty() {
        return Err(format!(
            "name a target or --all; targets: {}",
            TARGETS.join(", ")
        ));
    }
    setup_cargo_fuzz()?;
    for t in &targets {
        fuzz(t, secs)?;
    }
    Ok(())
}

/// The bounded run of `cargo xtask test`: every target for AGENTBOX_FUZZ_SECS (default 60 s).
pub(crate) fn test_step() -> Res<()> {
    let secs = std::env::var("AGENTBOX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TEST_SECS);
    setup_cargo_fuzz()?;
    for t in TARGETS {
        fuzz(t, secs)?;
    }
    Ok(())
}

/// Runs one target for `secs` seconds. Fails on a crash, a hang (10 s per input) or more
/// than 2 GiB resident; libFuzzer leaves the input in fuzz/artifacts/TARGET/.
pub(crate) fn fuzz(target: &str, secs: u64) -> Res<()> {
    let dir = root().join("fuzz");
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let seeds = dir.join("seeds").join(target);
    let mut command = Command::new("cargo");
    command
        .current_dir(&dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--sanitizer", "none", "-O", target])
        .arg(&corpus);
    if Path::new(&seeds).is_dir() {
        // Read-only extra corpus: new inputs go to the first directory only.
        command.arg(&seeds);
    }
    command.args([
        "--",
        &format!("-max_total_time={secs}"),
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=65536",
        "-print_final_stats=1",
    ]);
    run(&mut command)
}
