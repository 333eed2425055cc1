//! The Ironclaw command-line client.
#![forbid(unsafe_code)]
fn main() -> std::process::ExitCode {
    ironclaw_cli::cli::main()
}
