//! The calculator plugin: safe evaluation of arithmetic expressions (no code execution).

mod expr;

use ironclaw_plugin_sdk::{Context, Plugin, PluginError, export_plugin};
use serde_json::{Value, json};

/// Digits after the decimal point when the request gives no `precision`.
const DEFAULT_PRECISION: u32 = 10;
const MAX_PRECISION: u32 = 15;

#[derive(Default)]
pub struct Calculator;

impl Calculator {
    fn parameters(parameters: &Value) -> Result<(&str, u32), String> {
        let expression = parameters.get("expression").and_then(Value::as_str).ok_or("'expression' must be a string")?;
        let precision = match parameters.get("precision") {
            None | Some(Value::Null) => DEFAULT_PRECISION,
            Some(p) => {
                p.as_u64()
                    .filter(|p| *p <= u64::from(MAX_PRECISION))
                    .ok_or(format!("'precision' must be an integer from 0 to {MAX_PRECISION}"))? as u32
            }
        };
        Ok((expression, precision))
    }
}

/// Rounds to `precision` decimals; integral results are returned as JSON integers.
fn to_json(value: f64, precision: u32) -> Value {
    let scale = 10f64.powi(precision as i32);
    let rounded = (value * scale).round() / scale;
    let rounded = if rounded.is_finite() { rounded } else { value };
    if rounded.fract() == 0.0 && rounded.abs() < 9.007_199_254_740_992e15 {
        json!(rounded as i64)
    } else {
        json!(rounded)
    }
}

impl Plugin for Calculator {
    fn validate(&self, parameters: &Value) -> Result<(), String> {
        Self::parameters(parameters).map(|_| ())
    }

    fn execute(&self, parameters: &Value, _context: &Context<'_>) -> Result<Value, PluginError> {
        let (expression, precision) = Self::parameters(parameters).map_err(PluginError::InvalidInput)?;
        // Every way an evaluation fails (syntax, an unknown name, division by zero, a domain or
        // range error) is a property of the expression: the caller's to fix.
        let value = expr::evaluate(expression).map_err(|e| PluginError::InvalidInput(e.to_string()))?;
        Ok(json!({"result": to_json(value, precision), "expression": expression}))
    }
}

export_plugin!(Calculator);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parameters: Value) -> Result<Value, PluginError> {
        let config = json!({});
        Calculator.execute(&parameters, &Context { execution_id: "t", config: &config })
    }

    #[test]
    fn seed_example_gives_five() {
        let out = run(json!({"expression": "sqrt(16) + sin(pi/2)", "precision": 5})).unwrap();
        assert_eq!(out["result"], json!(5));
    }

    #[test]
    fn precision_rounds() {
        assert_eq!(run(json!({"expression": "2/3", "precision": 3})).unwrap()["result"], json!(0.667));
        assert_eq!(run(json!({"expression": "1/3"})).unwrap()["result"], json!(0.3333333333));
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(run(json!({"expression": "1/0"})), Err(PluginError::InvalidInput("division by zero".into())));
        assert_eq!(
            run(json!({"expression": "nope(1)"})),
            Err(PluginError::InvalidInput("unknown function 'nope'".into()))
        );
        assert!(matches!(run(json!({"expression": "sqrt(-1)"})), Err(PluginError::InvalidInput(_))));
        assert!(matches!(run(json!({"expression": "1 +"})), Err(PluginError::InvalidInput(_))));
        assert!(matches!(run(json!({"expression": 5})), Err(PluginError::InvalidInput(_))));
        assert!(matches!(run(json!({"expression": "1", "precision": 99})), Err(PluginError::InvalidInput(_))));
    }
}
