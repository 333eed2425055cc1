//! The Ironclaw daemon: everything that runs in `ironclawd` but the runner.
//!
//! Plugins are untrusted code. The daemon never loads plugin code itself: each execution runs in
//! a runner (`ironclaw-runner`, a re-exec of our own binary) that confines itself before any
//! plugin code runs. The daemon knows runners only through `ironclaw-protocol`: the spec it
//! sends, the messages it reads back.
//!
//! The parts, and which way the arrows go (a module uses only those below it):
//! - front end: [`api`] (REST: routes, extractors, errors, the OpenAPI document) and [`mcp`]
//!   (the plugins as MCP tools, over Streamable HTTP and a stream for stdio), behind
//!   [`auth`], served by [`server`]; [`daemon`] starts and stops everything, with [`systemd`]
//!   and the [`watcher`];
//! - [`service`]: every operation a front end offers, with typed answers;
//! - [`supervisor`]: the owners of state (catalog, admission, executions, reloads) and of the
//!   runners; the [`proxy`] that is each sandbox's only way out; [`execution_result`], what an
//!   execution returns;
//! - [`catalog`]: what admins write and ship (manifests, policies, secrets) and the registry
//!   built from them; [`host`], what the kernel offers; [`id_range`], the ids this daemon
//!   claimed; [`trust`], the certificate authorities plugins trust; [`config`]; [`audit`];
//!   [`files`], atomic replacement and tolerant removal;
//! - [`sys`]: the daemon's few system-call wrappers, its only `unsafe` code.
#![deny(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!("ironclaw's sandbox needs Linux (namespaces, Landlock, seccomp)");

pub mod api;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod daemon;
pub mod execution_result;
pub mod files;
pub mod host;
pub mod id_range;
pub mod mcp;
pub mod proxy;
pub mod server;
pub mod service;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
pub mod systemd;
pub mod trust;
pub mod watcher;
