//! How the CLI shows the daemon's answers to people: tables and key-value lines (`--json` prints
//! the answer as it came).
#![forbid(unsafe_code)]

use serde_json::Value;

use crate::args::{Command, PluginsCommand};

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
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

pub fn key_values(pairs: Vec<(&str, String)>) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.into_iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

pub fn render(command: &Command, body: &Value) -> String {
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

pub fn reload_outcome(body: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], vec![vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
