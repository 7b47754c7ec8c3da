use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ProfileCmd {
    /// Not implemented yet.
    Todo,
}

pub fn exec(_cmd: ProfileCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
