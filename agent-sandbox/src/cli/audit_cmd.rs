use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Not implemented yet.
    Todo,
}

pub fn exec(_cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
