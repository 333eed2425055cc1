//! Ironclaw: a hardened sandbox daemon for AI-assistant plugins.
//!
//! Threat model in one paragraph: plugins are untrusted code. Each execution runs in a fresh
//! process (a re-exec of our own binary) that confines itself before any plugin code runs: new
//! pid/net/mount/ipc/uts namespaces, resource limits (cgroup v2 or rlimits plus a monitor),
//! Landlock, no capabilities, an unprivileged uid, no_new_privs and a seccomp allowlist. The
//! daemon never loads plugin code itself. What was enforced is reported with every result.
//!
//! Layout: `sandbox` (the layers; `sandbox::sys` and `plugin_host` hold all the unsafe code),
//! `runner` (the confined process), `supervisor` (the owner of all state: registry, executions,
//! limits, runners), `api` (REST), `cli`/`client` (the `ironclaw` command), and the admin-facing
//! formats (`config`, `manifest`, `policy`).

#[cfg(not(target_os = "linux"))]
compile_error!("ironclaw's sandbox needs Linux (namespaces, Landlock, seccomp)");

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod ipc;
pub mod layers;
pub mod manifest;
pub mod permissions;
pub mod plugin_host;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod runner;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod supervisor;
pub mod systemd;
pub mod units;
pub mod watcher;
