use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn exec(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
