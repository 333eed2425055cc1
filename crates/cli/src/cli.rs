//! The `ironclaw` command: a client of the daemon's API, plus `doctor`, which needs no daemon.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use serde_json::{Value, json};

use crate::args::{Cli, Command, EXIT_FAILURE, EXIT_UNREACHABLE, PluginsCommand, PolicyCommand, ToolsCommand};
use crate::client::{Answer, Client, Endpoint};
use crate::local::{doctor, policy_check};
use crate::relay;
use crate::render::render;

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
        Command::Mcp => return relay::mcp(&client).await,
        Command::Plugins { command: PluginsCommand::List } => client.get("/api/v1/plugins").await,
        Command::Tools { command: ToolsCommand::Export { format } } => {
            let answer = client.get("/api/v1/tools").await;
            if let Ok(a) = &answer
                && a.status.is_success()
            {
                let exported = ironclaw_daemon::service::tools::export(&a.body, format.as_str());
                let text = exported.and_then(|v| serde_json::to_string_pretty(&v).ok());
                let Some(text) = text else {
                    eprintln!("ironclaw: the daemon's tool list is not in the expected shape");
                    return ExitCode::from(EXIT_FAILURE);
                };
                println!("{text}");
                return ExitCode::SUCCESS;
            }
            answer
        }
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
}
