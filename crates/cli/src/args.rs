//! The command line: the arguments `ironclaw` takes, and its exit statuses.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use ironclaw_daemon::config::DEFAULT_SOCKET;

#[derive(Parser)]
#[command(name = "ironclaw", version, about = "Control the Ironclaw sandbox daemon")]
pub struct Cli {
    /// The daemon's unix socket.
    #[arg(long, env = "IRONCLAW_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Talk to the daemon over TCP instead, e.g. http://127.0.0.1:8787.
    #[arg(long, env = "IRONCLAW_URL")]
    pub url: Option<String>,
    /// A bearer token for the TCP API (better given in the environment than on the command line).
    #[arg(long, env = "IRONCLAW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the daemon's JSON instead of tables (before the command: `ironclaw --json system`).
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List or inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// The plugins you may execute, as tools for an AI assistant.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Serve MCP on stdin and stdout for an AI assistant (`{"command": "ironclaw", "args":
    /// ["mcp"]}`): relays to the daemon, which sees this process's own credentials. Nothing
    /// but MCP messages is written to stdout; errors go to stderr.
    Mcp,
    /// Enable a plugin (persisted across restarts).
    Enable { name: String },
    /// Disable a plugin without unloading it (persisted across restarts).
    Disable { name: String },
    /// Reload one plugin from its folder, or everything (policies, secrets, every plugin).
    Reload {
        /// The plugin; omit it (or give --all) to reload everything.
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// List the kept backups of a plugin (newest first).
    Backups { name: String },
    /// Restore a kept backup of a plugin (see `backups`).
    Rollback { name: String, backup: String },
    /// Execute a plugin.
    Exec {
        name: String,
        /// A parameter, `key=value`; the value is read as JSON when it parses, else as a string.
        #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// All parameters as one JSON object; `-` reads it from stdin.
        #[arg(long = "json", value_name = "JSON", conflicts_with = "params")]
        json_params: Option<String>,
        /// Return at once with the execution id (see `execution` and `cancel`).
        #[arg(long)]
        detach: bool,
    },
    /// Show one execution (running or finished).
    Execution { id: String },
    /// List running and recent executions.
    Executions {
        #[arg(long)]
        running: bool,
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Cancel a running execution.
    Cancel { id: String },
    /// Execution statistics, for all plugins or one.
    Stats { name: Option<String> },
    /// The daemon's version, host capabilities and active layers.
    System,
    /// Admin policy files (no daemon needed).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// What this host supports for each layer, and what the daemon would enforce (no daemon needed).
    Doctor {
        /// The policies directory to evaluate.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate the policies offline (like `nginx -t`) and print each plugin's effective
    /// permissions. Exits 1 on any error, or if a plugin would not be enabled for lack of a grant.
    Check {
        /// The policies directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// The plugins directory whose manifests are checked against the policies.
        #[arg(long, default_value = "plugins")]
        plugins: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Print the tool list in a function-calling format.
    Export {
        #[arg(long, value_enum, default_value = "mcp")]
        format: ToolFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ToolFormat {
    /// MCP `tools/list` (name, title, description, inputSchema, annotations).
    Mcp,
    /// OpenAI Chat Completions `tools`.
    Openai,
    /// Anthropic Messages `tools`.
    Anthropic,
}

impl ToolFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolFormat::Mcp => "mcp",
            ToolFormat::Openai => "openai",
            ToolFormat::Anthropic => "anthropic",
        }
    }
}

#[derive(Subcommand)]
pub enum PluginsCommand {
    List,
    Info { name: String },
}

/// Exit statuses: 0 success, 1 failure reported by the daemon or the plugin, 3 no daemon.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 3;
