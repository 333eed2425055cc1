//! The commands that need no daemon: `policy check` reads the policy and plugin files, `doctor`
//! probes the host the way the daemon would.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::args::EXIT_FAILURE;
use crate::render::{key_values, table, text};

/// `ironclaw policy check`: every policy file parsed, every plugin's effective permissions.
pub fn policy_check(dir: &std::path::Path, plugins_dir: &std::path::Path, as_json: bool) -> ExitCode {
    let policy = match ironclaw_daemon::catalog::policy::PolicySet::load(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ironclaw: policy check failed: {}", ironclaw_protocol::error_chain(&e));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let folders = match ironclaw_daemon::catalog::registry::plugin_folders(plugins_dir) {
        Ok(folders) => folders,
        Err(e) => {
            eprintln!("ironclaw: cannot read the plugins directory {}: {e}", plugins_dir.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut failed = false;
    let mut reports = Vec::new();
    let mut names = Vec::new();
    for folder in folders {
        let report = match ironclaw_daemon::catalog::manifest::Manifest::load(&folder) {
            Err(e) => json!({"plugin": folder.display().to_string(), "ok": false, "error": e.to_string()}),
            Ok(m) => {
                names.push(m.name.clone());
                match policy.effective(&m) {
                    Ok(eff) => json!({"plugin": m.name, "ok": true, "effective": eff}),
                    Err(missing) => json!({"plugin": m.name, "ok": false, "error": missing.join("; ")}),
                }
            }
        };
        failed |= report["ok"] == false;
        reports.push(report);
    }
    let unknown: Vec<String> = policy
        .named_plugins()
        .filter(|(_, n)| !names.iter().any(|m| m == n))
        .map(|(file, n)| format!("{}: [plugins.{n}] names a plugin that is not installed", file.display()))
        .collect();
    if as_json {
        let out = json!({"ok": !failed, "files": policy.files, "plugins": reports, "warnings": unknown});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        let files: Vec<String> = policy.files.iter().map(|f| f.display().to_string()).collect();
        println!("policies: {} file(s) parsed: {}", files.len(), files.join(", "));
        for r in &reports {
            println!();
            match r.get("effective") {
                Some(eff) => {
                    println!("{}: ok", text(&r["plugin"]));
                    print_effective(eff);
                }
                None => println!("{}: NOT ENABLED: {}", text(&r["plugin"]), text(&r["error"])),
            }
        }
        for warning in &unknown {
            println!("\nwarning: {warning}");
        }
    }
    ExitCode::from(if failed { EXIT_FAILURE } else { 0 })
}

fn print_effective(eff: &Value) {
    let mut rows = Vec::new();
    for kind in ["network", "network_deny", "private_addresses", "fs_read", "fs_write", "secrets"] {
        for g in eff[kind].as_array().into_iter().flatten() {
            rows.push(vec![kind.to_string(), text(&g["value"]), source(&g["granted_by"])]);
        }
    }
    if !eff["workspace"].is_null() {
        rows.push(vec!["workspace".into(), text(&eff["workspace"]["value"]), source(&eff["workspace"]["granted_by"])]);
    }
    for r in eff["denied"].as_array().into_iter().flatten() {
        rows.push(vec![format!("{} (DENIED)", text(&r["permission"])), text(&r["value"]), source(&r["denied_by"])]);
    }
    for (name, value) in eff["limits"].as_object().into_iter().flatten() {
        rows.push(vec![format!("limit {name}"), text(value), text(&eff["limit_sources"][name])]);
    }
    print!("{}", table(&["permission", "value", "from"], rows));
}

fn source(s: &Value) -> String {
    let mut out = format!("{}: {}", text(&s["file"]), text(&s["rule"]));
    if let Some(reason) = s["reason"].as_str() {
        out.push_str(&format!(" ({reason})"));
    }
    out
}

/// Reports what this host supports, without a daemon.
pub fn doctor(policies: &std::path::Path, as_json: bool) -> ExitCode {
    let (host, _) = ironclaw_daemon::supervisor::resources::probe_host();
    let policy = ironclaw_daemon::catalog::policy::PolicySet::load(policies);
    let requirements = policy.as_ref().map(|p| p.requirements.clone()).unwrap_or_default();
    let verdict = match &policy {
        Ok(p) => host.check(&p.requirements).map_err(|e| e.to_string()),
        Err(e) => Err(ironclaw_protocol::error_chain(e)),
    };
    use ironclaw_protocol::layers::Layer;
    let row = |layer: Layer, detail: String| {
        let missing = host.missing(layer);
        let required = requirements.layers.contains(&layer);
        json!({
            "layer": layer.to_string(),
            "host": if missing.is_none() { "supported" } else { "missing" },
            "detail": missing.unwrap_or(detail),
            "required_by_policy": required,
            "daemon_would": match (host.missing(layer).is_none(), required) {
                (true, _) => "enforce",
                (false, true) => "refuse every execution",
                (false, false) => if layer == Layer::CgroupV2 { "use the fallback (rlimits + monitor)" } else { "run without it (reported on every result)" },
            },
        })
    };
    let rows = vec![
        row(Layer::Namespaces, format!("{:?}", host.namespaces)),
        row(Layer::Landlock, format!("ABI {}", host.landlock_abi.unwrap_or(0))),
        row(Layer::Seccomp, "filters with errno and kill actions".into()),
        row(Layer::CgroupV2, format!("controllers {:?} at {:?}", host.cgroup_v2.controllers, host.cgroup_v2.mount)),
    ];
    let claims: Vec<Value> = ironclaw_daemon::id_range::claims()
        .into_iter()
        .map(|(block, held, holder)| json!({"ids": [block, block + u64::from(ironclaw_daemon::id_range::RANGE_SIZE) - 1], "held": held, "holder": holder}))
        .collect();
    let report = json!({
        "host": host, "layers": rows, "id_ranges": claims,
        "policy_ok": verdict.is_ok(), "policy_error": verdict.as_ref().err(),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!(
            "{}",
            key_values(vec![
                ("kernel", format!("{} ({})", host.kernel, host.arch)),
                ("running as root", host.running_as_root.to_string()),
                (
                    "capabilities",
                    if host.missing_capabilities.is_empty() {
                        "all the daemon needs".to_string()
                    } else {
                        format!("MISSING {}", host.missing_capabilities.join(", "))
                    },
                ),
                (
                    "workspaces",
                    match (&host.workspace_images_unavailable, host.workspace_online_growth) {
                        (Some(reason), _) => format!("UNAVAILABLE: {reason}"),
                        (None, true) => "size-capped ext4 images, grown online".to_string(),
                        (None, false) => {
                            "size-capped ext4 images (no CAP_SYS_RESOURCE: a larger size applies at the next start)"
                                .into()
                        }
                    },
                ),
            ])
        );
        print!(
            "{}",
            table(
                &["layer", "host", "required", "daemon would", "detail"],
                rows.iter()
                    .map(|r| vec![
                        text(&r["layer"]),
                        text(&r["host"]),
                        text(&r["required_by_policy"]),
                        text(&r["daemon_would"]),
                        text(&r["detail"])
                    ])
                    .collect(),
            )
        );
        for gap in &host.resource_gaps {
            println!("resource gap: {gap}");
        }
        if claims.is_empty() {
            println!(
                "id ranges: none claimed (a daemon takes the first free one from {})",
                ironclaw_daemon::id_range::DEFAULT_BASE
            );
        }
        for claim in &claims {
            let state = if claim["held"] == true { "held by" } else { "free, last held by" };
            println!("id range {}..{}: {state} {}", claim["ids"][0], claim["ids"][1], text(&claim["holder"]));
        }
        match &verdict {
            Ok(()) => println!("policy: the requirements in {} are met", policies.display()),
            Err(e) => println!("policy: NOT MET: {e}"),
        }
    }
    if verdict.is_ok() && host.missing_capabilities.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}
