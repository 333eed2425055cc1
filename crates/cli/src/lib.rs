//! The `ironclaw` command: an admin's and a script's way to the daemon's REST API ([`client`]),
//! plus `doctor`, which probes the host itself. It talks to the daemon only over the API.
#![forbid(unsafe_code)]

mod args;
pub mod cli;
pub mod client;
mod local;
mod render;
