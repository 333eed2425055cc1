//! The Ironclaw daemon. With the hidden first argument `__runner` it is instead one sandboxed
//! runner, started by the daemon itself; that check comes before any thread is started.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ironclaw_daemon::config::Config;

#[derive(Parser)]
#[command(name = "ironclawd", version, about = "Ironclaw sandbox daemon")]
struct Args {
    /// Configuration file (TOML). Without it, the built-in defaults serve the current directory's
    /// `plugins/` and `policies/`.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Unix socket path (overrides the config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TCP address to listen on as well, e.g. 127.0.0.1:8787 (overrides the config).
    #[arg(long)]
    tcp: Option<std::net::SocketAddr>,
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    #[arg(long)]
    policies_dir: Option<PathBuf>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Log level (or set IRONCLAW_LOG).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == ironclaw_protocol::RUNNER_ARG) {
        ironclaw_runner::main();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironclawd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(s) = args.socket {
        config.api.socket = s;
    }
    if let Some(t) = args.tcp {
        config.api.tcp = Some(t);
    }
    if let Some(d) = args.plugins_dir {
        config.plugins_dir = d;
    }
    if let Some(d) = args.policies_dir {
        config.policies_dir = d;
    }
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    config.validate()?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    ironclaw_daemon::daemon::init_tracing(args.log_json, &args.log_level);
    ironclaw_daemon::daemon::private_mounts()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("failed to start the runtime")?;
    runtime.block_on(ironclaw_daemon::daemon::run(config))?;
    Ok(())
}
