//! The Ironclaw command-line client.
fn main() -> std::process::ExitCode {
    ironclaw::cli::main()
}
