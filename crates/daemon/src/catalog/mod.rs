//! What admins write and plugin authors ship, parsed and checked: plugin manifests, policies
//! and the permissions and units they use, secrets, the snapshots plugins run from, and the
//! registry of plugins built from all of them.
#![forbid(unsafe_code)]

pub mod manifest;
pub mod permissions;
pub mod policy;
pub mod registry;
pub mod secrets;
pub mod snapshot;
pub mod units;
