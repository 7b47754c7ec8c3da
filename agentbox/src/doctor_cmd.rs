use std::process::ExitCode;

/// Probe the kernel and privileges: Landlock ABI, seccomp actions, which BPF program types
/// load (by loading a tiny program of each), cgroup2, bpffs, user namespaces — and from them,
/// which guarantees `agentbox run` can give here.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  agentbox doctor\n  sudo agentbox doctor      what root adds (cgroup-BPF, observers, BPF LSM)"
)]
pub(crate) struct DoctorArgs {
    /// Print the report as JSON (for tools) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn exec(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = agent_sandbox::doctor::probe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
