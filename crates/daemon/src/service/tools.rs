//! The plugins a caller may execute, described as tools for an AI assistant: the MCP shape
//! (`name`, `title`, `description`, `inputSchema`, `annotations`), which the other vendors'
//! function-calling formats are made from. What a tool is hinted to do comes from what the
//! policy grants, never from what the plugin claims.
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::catalog::registry::PluginState;
use crate::supervisor::Supervisor;

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    pub tools: Vec<Tool>,
}

/// One tool, as MCP's `tools/list` describes it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    /// The plugin's name.
    pub name: String,
    pub title: String,
    /// What the model reads: the manifest's description.
    pub description: String,
    /// The plugin's parameter schema, made strict (see [`strict_schema`]).
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// The manifest's `[output]`: the shape of a successful result's data, checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    pub annotations: Annotations,
}

/// Hints a client may show or act on, derived from the plugin's effective grants.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// No write grant and no workspace: the tool changes nothing it could keep.
    pub read_only_hint: bool,
    /// Any network grant: the tool reaches the world outside the host.
    pub open_world_hint: bool,
    /// Results are cached (`cache_ttl`): the same call gives the same answer for a while.
    pub idempotent_hint: bool,
}

/// Every plugin that is enabled and granted, in name order.
pub fn tools(catalog: &Catalog) -> ToolList {
    let tools = catalog.registry(|reg| {
        reg.plugins
            .values()
            .filter(|e| e.state == PluginState::Enabled)
            .filter_map(|e| {
                let (plugin, eff) = (e.plugin.as_ref()?, e.effective.as_ref()?);
                Some(Tool {
                    name: e.name.clone(),
                    title: plugin
                        .manifest
                        .title
                        .clone()
                        .unwrap_or_else(|| plugin.manifest.name.replace(['_', '-'], " ")),
                    description: plugin.manifest.description.clone(),
                    input_schema: strict_schema(&plugin.manifest.parameters),
                    output_schema: plugin.manifest.output.clone(),
                    annotations: Annotations {
                        read_only_hint: eff.fs_write.is_empty() && eff.workspace.is_none(),
                        open_world_hint: !eff.network.is_empty(),
                        idempotent_hint: eff.limits.cache_ttl.is_some_and(|t| !t.0.is_zero()),
                    },
                })
            })
            .collect()
    });
    ToolList { tools }
}

/// Wakes when the tool list differs from the one seen last: the catalog announces every
/// write, and most (an execution's history, a reload that changed nothing) leave the list as
/// it was.
pub struct ToolListChanges {
    supervisor: Arc<Supervisor>,
    writes: watch::Receiver<u64>,
    seen: Value,
}

impl ToolListChanges {
    pub(super) fn new(supervisor: Arc<Supervisor>) -> Self {
        let mut writes = supervisor.catalog().writes();
        writes.mark_unchanged();
        let seen = listing(supervisor.catalog());
        ToolListChanges { supervisor, writes, seen }
    }

    /// Returns once the list has changed. (The catalog, which holds the sender, lives as long
    /// as `self` does: the channel never closes under us.)
    pub async fn changed(&mut self) {
        loop {
            if self.writes.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = listing(self.supervisor.catalog());
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

fn listing(catalog: &Catalog) -> Value {
    serde_json::to_value(tools(catalog)).unwrap_or_default()
}

/// The schema strict function-calling clients accept: an object schema without properties is
/// `{"type": "object", "additionalProperties": false}`, and every array, at any depth, says
/// what its items are.
pub fn strict_schema(schema: &Value) -> Value {
    let mut strict = schema.clone();
    if let Value::Object(top) = &mut strict {
        let is_object = top.get("type").is_none_or(|t| t == "object");
        let open = ["properties", "additionalProperties", "patternProperties"].iter().all(|k| !top.contains_key(*k));
        if is_object && open {
            top.insert("type".into(), json!("object"));
            top.insert("additionalProperties".into(), json!(false));
        }
    }
    give_items(&mut strict);
    strict
}

fn give_items(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    let is_array = match map.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
        _ => false,
    };
    if is_array && !map.contains_key("items") && !map.contains_key("prefixItems") {
        map.insert("items".into(), json!({}));
    }
    for (key, value) in map.iter_mut() {
        match (key.as_str(), value) {
            ("properties" | "patternProperties" | "$defs" | "definitions", Value::Object(children)) => {
                children.values_mut().for_each(give_items)
            }
            ("items" | "additionalProperties" | "not" | "if" | "then" | "else" | "contains", child) => {
                give_items(child)
            }
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(children)) => {
                children.iter_mut().for_each(give_items)
            }
            _ => {}
        }
    }
}

/// A tool list (as `GET /api/v1/tools` answers it) in another vendor's function-calling
/// format: `openai` (Chat Completions `tools`) or `anthropic` (Messages `tools`); `mcp` is the
/// list as it is.
pub fn export(list: &Value, format: &str) -> Option<Value> {
    let tools = list["tools"].as_array()?;
    let each = |f: &dyn Fn(&Value) -> Value| Value::Array(tools.iter().map(f).collect());
    match format {
        "mcp" => Some(list.clone()),
        "openai" => Some(each(
            &|t| json!({"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["inputSchema"]}}),
        )),
        "anthropic" => Some(each(
            &|t| json!({"name": t["name"], "description": t["description"], "input_schema": t["inputSchema"]}),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_made_strict_without_changing_what_they_accept_otherwise() {
        assert_eq!(strict_schema(&json!({"type": "object"})), json!({"type": "object", "additionalProperties": false}));
        let schema = json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array"},
                "pairs": {"type": ["array", "null"], "items": {"type": "array"}},
                "either": {"anyOf": [{"type": "array"}, {"type": "string"}]}
            },
            "required": ["tags"]
        });
        let strict = strict_schema(&schema);
        assert_eq!(strict["properties"]["tags"]["items"], json!({}));
        assert_eq!(strict["properties"]["pairs"]["items"]["items"], json!({}));
        assert_eq!(strict["properties"]["either"]["anyOf"][0]["items"], json!({}));
        assert!(strict.get("additionalProperties").is_none(), "a schema with properties keeps its openness");
        assert_eq!(strict["required"], json!(["tags"]));
    }

    #[test]
    fn each_vendor_format_carries_name_description_and_schema() {
        let list = ToolList {
            tools: vec![Tool {
                name: "calculator".into(),
                title: "calculator".into(),
                description: "Evaluates arithmetic".into(),
                input_schema: json!({"type": "object", "additionalProperties": false}),
                output_schema: None,
                annotations: Annotations { read_only_hint: true, open_world_hint: false, idempotent_hint: false },
            }],
        };
        let list = serde_json::to_value(&list).unwrap();
        let mcp = export(&list, "mcp").unwrap();
        assert_eq!(mcp["tools"][0]["inputSchema"]["type"], "object");
        assert_eq!(mcp["tools"][0]["annotations"]["readOnlyHint"], true);
        let openai = export(&list, "openai").unwrap();
        assert_eq!(openai[0]["function"]["parameters"], mcp["tools"][0]["inputSchema"]);
        let anthropic = export(&list, "anthropic").unwrap();
        assert_eq!(anthropic[0]["input_schema"], mcp["tools"][0]["inputSchema"]);
        assert!(export(&list, "gemini").is_none());
    }
}
