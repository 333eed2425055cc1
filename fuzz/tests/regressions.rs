//! Replays every kept input through its fuzz target: the seeds each target starts from, and
//! every input that once crashed, hung or overflowed a target (fixed since). A new finding goes
//! into `regressions/<target>/` with the fix.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        for entry in entries.flatten() {
            run(&std::fs::read(entry.path()).unwrap());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no seeds or regression inputs for {target}");
}

#[test]
fn manifest_inputs() {
    replay("manifest", ironclaw_fuzz::manifest);
}

#[test]
fn policy_inputs() {
    replay("policy", ironclaw_fuzz::policy);
}

#[test]
fn ipc_frame_inputs() {
    replay("ipc_frame", ironclaw_fuzz::ipc_frame);
}

#[test]
fn calculator_inputs() {
    replay("calculator", ironclaw_fuzz::calculator);
}
