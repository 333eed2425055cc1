//! The `ironclaw` command: a client of the daemon's API, plus `doctor`, which needs no daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{Answer, Client, Endpoint};
use ironclaw_daemon::config::DEFAULT_SOCKET;

#[derive(Parser)]
#[command(name = "ironclaw", version, about = "Control the Ironclaw sandbox daemon")]
pub struct Cli {
    /// The daemon's unix socket.
    #[arg(long, env = "IRONCLAW_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Talk to the daemon over TCP instead, e.g. http://127.0.0.1:8787.
    #[arg(long, env = "IRONCLAW_URL")]
    url: Option<String>,
    /// A bearer token for the TCP API (better given in the environment than on the command line).
    #[arg(long, env = "IRONCLAW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the daemon's JSON instead of tables (before the command: `ironclaw --json system`).
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List or inspect plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
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
enum PolicyCommand {
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
enum PluginsCommand {
    List,
    Info { name: String },
}

/// Exit statuses: 0 success, 1 failure reported by the daemon or the plugin, 3 no daemon.
const EXIT_FAILURE: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Doctor { policies } => return doctor(policies, cli.json),
        Command::Policy { command: PolicyCommand::Check { dir, plugins } } => {
            return policy_check(dir, plugins, cli.json);
        }
        _ => {}
    }
    let endpoint = match &cli.url {
        Some(url) => match Endpoint::from_url(url) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("ironclaw: {e}");
                return ExitCode::from(2);
            }
        },
        None => Endpoint::Unix(cli.socket.clone()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let client = Client::new(endpoint).with_token(cli.token.clone());
    runtime.block_on(run(cli, client))
}

fn parse_param(raw: &str) -> Result<(String, Value), String> {
    let (k, v) = raw.split_once('=').ok_or_else(|| format!("--param {raw:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("--param {raw:?}: the key is empty"));
    }
    Ok((k.to_string(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))))
}

async fn run(cli: Cli, client: Client) -> ExitCode {
    let answer = match &cli.command {
        Command::Plugins { command: PluginsCommand::List } => client.get("/api/v1/plugins").await,
        Command::Plugins { command: PluginsCommand::Info { name } } => {
            client.get(&format!("/api/v1/plugins/{name}")).await
        }
        Command::Reload { name: Some(name), .. } => {
            client.post(&format!("/api/v1/plugins/{name}/reload"), &json!({})).await
        }
        Command::Reload { name: None, .. } => client.post("/api/v1/plugins/reload-all", &json!({})).await,
        Command::Backups { name } => client.get(&format!("/api/v1/plugins/{name}/backups")).await,
        Command::Rollback { name, backup } => {
            client.post(&format!("/api/v1/plugins/{name}/rollback"), &json!({"backup": backup})).await
        }
        Command::Enable { name } => {
            client.put(&format!("/api/v1/plugins/{name}/enable"), &json!({"enabled": true})).await
        }
        Command::Disable { name } => {
            client.put(&format!("/api/v1/plugins/{name}/enable"), &json!({"enabled": false})).await
        }
        Command::Exec { name, params, json_params, detach } => {
            let stdin_text;
            let json_params = match json_params.as_deref() {
                Some("-") => {
                    let mut text = String::new();
                    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                        eprintln!("ironclaw: cannot read the parameters from stdin: {e}");
                        return ExitCode::from(2);
                    }
                    stdin_text = text;
                    Some(&stdin_text)
                }
                _ => json_params.as_ref(),
            };
            let parameters = match json_params {
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("ironclaw: --json is not valid JSON: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => {
                    let mut map = serde_json::Map::new();
                    for raw in params {
                        match parse_param(raw) {
                            Ok((k, v)) => {
                                map.insert(k, v);
                            }
                            Err(e) => {
                                eprintln!("ironclaw: {e}");
                                return ExitCode::from(2);
                            }
                        }
                    }
                    Value::Object(map)
                }
            };
            client
                .post(&format!("/api/v1/plugins/{name}/execute"), &json!({"parameters": parameters, "wait": !detach}))
                .await
        }
        Command::Execution { id } => client.get(&format!("/api/v1/executions/{id}")).await,
        Command::Executions { running, plugin } => {
            let mut path = format!("/api/v1/executions?state={}", if *running { "running" } else { "all" });
            if let Some(p) = plugin {
                path.push_str(&format!("&plugin={p}"));
            }
            client.get(&path).await
        }
        Command::Cancel { id } => client.post(&format!("/api/v1/executions/{id}/cancel"), &serde_json::json!({})).await,
        Command::Stats { name: Some(name) } => client.get(&format!("/api/v1/plugins/{name}/stats")).await,
        Command::Stats { name: None } => client.get("/api/v1/stats").await,
        Command::System => client.get("/api/v1/system").await,
        Command::Doctor { .. } | Command::Policy { .. } => unreachable!("handled before connecting"),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ironclaw: {}", ironclaw_protocol::error_chain(&e));
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    report(&cli, answer)
}

fn report(cli: &Cli, answer: Answer) -> ExitCode {
    let Answer { status, body, .. } = answer;
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("the daemon returned an error");
        if cli.json {
            println!("{body}");
        } else {
            eprintln!("ironclaw: {message} ({code}, HTTP {})", status.as_u16());
        }
        return ExitCode::from(EXIT_FAILURE);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    } else {
        print!("{}", render(&cli.command, &body));
    }
    let failed_execution = matches!(cli.command, Command::Exec { detach: false, .. }) && body["status"] != "success";
    let failed_reload = body["result"] == "failed"
        || body["policy"]["result"] == "failed"
        || body["plugins"].as_array().is_some_and(|ps| ps.iter().any(|p| p["result"] == "failed"));
    if failed_execution || failed_reload { ExitCode::from(EXIT_FAILURE) } else { ExitCode::SUCCESS }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        out.truncate(out.trim_end().len());
        out + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out += &line(row);
    }
    out
}

fn key_values(pairs: Vec<(&str, String)>) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.into_iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

fn render(command: &Command, body: &Value) -> String {
    match command {
        Command::Plugins { command: PluginsCommand::List } => table(
            &["name", "version", "runtime", "state", "description / reason"],
            body["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let note = if p["reason"].is_null() { text(&p["description"]) } else { text(&p["reason"]) };
                    vec![text(&p["name"]), text(&p["version"]), text(&p["runtime"]), text(&p["state"]), note]
                })
                .collect(),
        ),
        Command::Exec { detach: false, .. } | Command::Execution { .. } => {
            let mut pairs = vec![
                ("id", text(&body["id"])),
                ("plugin", format!("{} {}", text(&body["plugin"]), text(&body["plugin_version"]))),
                ("status", text(&body["status"])),
            ];
            if !body["data"].is_null() {
                pairs.push(("data", serde_json::to_string_pretty(&body["data"]).unwrap_or_default()));
            }
            if !body["error"].is_null() {
                pairs.push(("error", text(&body["error"])));
            }
            if !body["signal"].is_null() {
                pairs.push(("signal", text(&body["signal"])));
            }
            if !body["duration_ms"].is_null() {
                pairs.push((
                    "duration",
                    format!("{} ms (cpu {} ms)", text(&body["duration_ms"]), text(&body["cpu_time_ms"])),
                ));
                pairs.push(("peak memory", format!("{} bytes", text(&body["peak_memory_bytes"]))));
                pairs.push(("layers", body["layers"].to_string()));
            }
            if body["log"].as_str().is_some_and(|log| !log.is_empty()) {
                pairs.push(("log (stderr)", text(&body["log"]).trim_end().to_string()));
            }
            key_values(pairs)
        }
        Command::Executions { .. } => table(
            &["id", "plugin", "status", "duration_ms"],
            body["executions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| vec![text(&e["id"]), text(&e["plugin"]), text(&e["status"]), text(&e["duration_ms"])])
                .collect(),
        ),
        Command::Stats { .. } => {
            let mut out = key_values(vec![
                ("executions", text(&body["total"])),
                ("latency p50", format!("{} ms", text(&body["latency_ms"]["p50"]))),
                ("latency p95", format!("{} ms", text(&body["latency_ms"]["p95"]))),
                ("peak memory", format!("{} bytes", text(&body["peak_memory_bytes"]))),
            ]);
            if let Some(by) = body["by_status"].as_object() {
                out += &table(&["status", "count"], by.iter().map(|(k, v)| vec![k.clone(), text(v)]).collect());
            }
            out
        }
        Command::System => {
            let layers = &body["layers"];
            let mut out = key_values(vec![
                ("version", text(&body["version"])),
                ("plugin API", text(&body["plugin_api_version"])),
                ("kernel", text(&body["host"]["kernel"])),
                ("executions allowed", text(&body["policy"]["executions_allowed"])),
            ]);
            if !body["policy"]["refusal"].is_null() {
                out += &format!("refusal: {}\n", text(&body["policy"]["refusal"]));
            }
            out += &table(
                &["layer", "status"],
                layers.as_object().into_iter().flatten().map(|(k, v)| vec![k.clone(), text(v)]).collect(),
            );
            out
        }
        Command::Reload { name: Some(_), .. } | Command::Rollback { .. } => reload_outcome(body),
        Command::Reload { name: None, .. } => {
            let mut out = key_values(vec![
                ("policies", text(&body["policy"]["result"])),
                ("secrets", text(&body["secrets"]["result"])),
            ]);
            for failed in [&body["policy"]["reason"], &body["secrets"]["reason"]].into_iter().filter(|r| !r.is_null()) {
                out += &format!("refused: {}\n", text(failed));
            }
            let rows = body["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| vec![text(&p["plugin"]), text(&p["result"]), text(&p["version"]), text(&p["reason"])]);
            out + &table(&["plugin", "result", "version", "reason"], rows.collect())
        }
        Command::Backups { .. } => table(
            &["id", "version", "digest"],
            body["backups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| vec![text(&b["id"]), text(&b["version"]), text(&b["digest"])])
                .collect(),
        ),
        _ => format!("{}\n", serde_json::to_string_pretty(body).unwrap_or_default()),
    }
}

fn reload_outcome(body: &Value) -> String {
    let mut pairs = vec![
        ("plugin", text(&body["plugin"])),
        ("result", text(&body["result"])),
        ("version", format!("{} ({})", text(&body["version"]), text(&body["digest"]))),
    ];
    for (key, field) in [("previous", "previous_version"), ("backup", "backup"), ("reason", "reason")] {
        if !body[field].is_null() {
            pairs.push((key, text(&body[field])));
        }
    }
    key_values(pairs)
}

/// `ironclaw policy check`: every policy file parsed, every plugin's effective permissions.
fn policy_check(dir: &std::path::Path, plugins_dir: &std::path::Path, as_json: bool) -> ExitCode {
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
fn doctor(policies: &std::path::Path, as_json: bool) -> ExitCode {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_when_they_parse() {
        assert_eq!(parse_param("precision=5").unwrap(), ("precision".into(), json!(5)));
        assert_eq!(parse_param("expression=sqrt(16)").unwrap(), ("expression".into(), json!("sqrt(16)")));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], vec![vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
