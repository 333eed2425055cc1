//! The JSON Schemas a manifest declares, compiled: `parameters`, which every request is checked
//! against before anything runs, and `[output]`, which a successful result's `data` is checked
//! against before any caller sees it. A refusal names the path and echoes the offending value
//! abbreviated.
#![forbid(unsafe_code)]

use std::borrow::Cow;

use jsonschema::Validator;
use serde_json::Value;

use super::manifest::Manifest;

pub struct Schemas {
    parameters: Validator,
    output: Option<Validator>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("output", &self.output.is_some()).finish_non_exhaustive()
    }
}

/// Where a value breaks its schema, and how.
#[derive(Debug)]
pub struct SchemaRefusal {
    /// A JSON pointer; `/` for the whole value.
    pub path: String,
    pub message: String,
}

impl Schemas {
    /// Compiles the manifest's schemas (which `Manifest::validate` has checked).
    pub fn compile(manifest: &Manifest) -> Result<Schemas, String> {
        let parameters =
            jsonschema::validator_for(&manifest.parameters).map_err(|e| format!("field `parameters`: {e}"))?;
        let output = match &manifest.output {
            Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| format!("field `output`: {e}"))?),
            None => None,
        };
        Ok(Schemas { parameters, output })
    }

    pub fn check_parameters(&self, parameters: &Value) -> Result<(), SchemaRefusal> {
        first_refusal(&self.parameters, parameters)
    }

    /// Checks a successful result's data, when the manifest declares its shape.
    pub fn check_output(&self, data: &Value) -> Result<(), SchemaRefusal> {
        self.output.as_ref().map_or(Ok(()), |output| first_refusal(output, data))
    }

    /// Whether a request may leave `parameters` out (the schema accepts `{}`).
    pub fn accepts_no_parameters(&self) -> bool {
        self.parameters.is_valid(&serde_json::json!({}))
    }
}

/// The first refusal of `value`, as a caller reads it: the offending value abbreviated (long
/// strings cut, long arrays and objects shortened), so it never echoes a large value whole.
fn first_refusal(validator: &Validator, value: &Value) -> Result<(), SchemaRefusal> {
    const MAX_MESSAGE: usize = 512;
    let Some(err) = validator.iter_errors(value).next() else { return Ok(()) };
    let path = err.instance_path.to_string();
    let instance = Cow::Owned(abbreviated(&err.instance, 0));
    let message = jsonschema::ValidationError { instance, ..err }.to_string();
    let message = match message.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message,
    };
    Err(SchemaRefusal { path: if path.is_empty() { "/".into() } else { path }, message })
}

fn abbreviated(value: &Value, depth: usize) -> Value {
    const MAX_STRING: usize = 64;
    const MAX_ITEMS: usize = 8;
    match value {
        Value::String(s) => match s.char_indices().nth(MAX_STRING) {
            Some((cut, _)) => Value::String(format!("{}... ({} bytes)", &s[..cut], s.len())),
            None => value.clone(),
        },
        Value::Array(items) if depth < 3 => {
            let mut kept: Vec<Value> = items.iter().take(MAX_ITEMS).map(|v| abbreviated(v, depth + 1)).collect();
            if items.len() > MAX_ITEMS {
                kept.push(Value::String(format!("... ({} items)", items.len())));
            }
            Value::Array(kept)
        }
        Value::Object(map) if depth < 3 => {
            let mut kept: serde_json::Map<String, Value> =
                map.iter().take(MAX_ITEMS).map(|(k, v)| (k.clone(), abbreviated(v, depth + 1))).collect();
            if map.len() > MAX_ITEMS {
                kept.insert("...".into(), Value::String(format!("{} members", map.len())));
            }
            Value::Object(kept)
        }
        Value::Array(_) => Value::String("[...]".into()),
        Value::Object(_) => Value::String("{...}".into()),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refused_parameter_is_echoed_abbreviated() {
        let schema =
            json!({"type": "object", "properties": {"expression": {"type": "number"}, "list": {"maxItems": 2}}});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let huge = "a".repeat(500 * 1024);
        let parameters = json!({"expression": huge});
        let SchemaRefusal { path, message } = first_refusal(&validator, &parameters).unwrap_err();
        assert_eq!(path, "/expression");
        assert!(message.len() < 200, "{} bytes: {}", message.len(), &message[..200.min(message.len())]);
        assert!(message.contains(&format!("\"{}... ({} bytes)\"", "a".repeat(64), huge.len())), "{message}");
        assert!(message.ends_with("is not of type \"number\""), "the reason survives: {message}");

        let parameters = json!({"list": (0..1000).collect::<Vec<_>>()});
        let message = first_refusal(&validator, &parameters).unwrap_err().message;
        assert!(message.contains("(1000 items)") && message.len() < 200, "{message}");
    }
}
