use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SelftestArgs {}

pub fn exec(_args: SelftestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
