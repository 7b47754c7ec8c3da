fn main() -> std::process::ExitCode {
    agent_sandbox::cli::main()
}
