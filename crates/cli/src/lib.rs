//! The `ironclaw` command: an admin's and a script's way to the daemon's REST API ([`client`]).
//! It talks to the daemon only over the API; `doctor` and `policy check` need no daemon (they
//! read the host and the files themselves); `mcp` relays an assistant's stdio to the daemon's
//! MCP stream ([`relay`]).
#![forbid(unsafe_code)]

mod args;
pub mod cli;
pub mod client;
mod local;
mod relay;
mod render;
