//! weather: OpenWeatherMap current weather and forecasts, through the sandbox's egress proxy.
//!
//! Config (from policy): `base_url` (default the real API), `timeout_s`. Secret:
//! `OPENWEATHER_API_KEY`.

use std::time::Duration;

use ironclaw_plugin_sdk::http::HttpClient;
use ironclaw_plugin_sdk::{Context, Plugin, PluginError, export_plugin};
use serde_json::{Value, json};

const DEFAULT_BASE_URL: &str = "https://api.openweathermap.org/data/2.5";
const SERVICE: &str = "OpenWeatherMap";

#[derive(Default)]
pub struct Weather;

fn unit_names(units: &str) -> Value {
    match units {
        "imperial" => json!({"temperature": "°F", "wind_speed": "mph"}),
        "standard" => json!({"temperature": "K", "wind_speed": "m/s"}),
        _ => json!({"temperature": "°C", "wind_speed": "m/s"}),
    }
}

/// OpenWeatherMap's own error message (`{"cod": 401, "message": "..."}`).
fn upstream_message(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body).ok()?.get("message")?.as_str().map(str::to_string)
}

fn conditions(entry: &Value) -> Result<Value, PluginError> {
    let main = entry.get("main").filter(|m| m.is_object());
    let main = main.ok_or_else(|| PluginError::Failed(format!("{SERVICE} sent a malformed response: no 'main'")))?;
    Ok(json!({
        "temperature": main["temp"],
        "feels_like": main["feels_like"],
        "humidity": main["humidity"],
        "pressure": main["pressure"],
        "description": entry["weather"][0]["description"],
        "wind_speed": entry["wind"]["speed"],
    }))
}

impl Plugin for Weather {
    fn validate(&self, p: &Value) -> Result<(), String> {
        match (p.get("location"), p.get("lat"), p.get("lon")) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            _ => Err("give either 'location', or both 'lat' and 'lon'".into()),
        }
    }

    fn execute(&self, p: &Value, context: &Context<'_>) -> Result<Value, PluginError> {
        let key = ironclaw_plugin_sdk::secret("OPENWEATHER_API_KEY")?;
        let base = context.config["base_url"].as_str().unwrap_or(DEFAULT_BASE_URL).trim_end_matches('/');
        let timeout = Duration::from_secs(context.config["timeout_s"].as_u64().unwrap_or(10));
        let units = p["units"].as_str().unwrap_or("metric");
        let forecast = p["kind"].as_str() == Some("forecast");
        let count = p["count"].as_u64().unwrap_or(8).to_string();
        let (lat, lon) = (p["lat"].to_string(), p["lon"].to_string());
        let mut query: Vec<(&str, &str)> = vec![("units", units), ("appid", &key)];
        match p["location"].as_str() {
            Some(location) => query.push(("q", location)),
            None => query.extend([("lat", lat.as_str()), ("lon", lon.as_str())]),
        }
        if forecast {
            query.push(("cnt", &count));
        }
        let url = format!("{base}/{}", if forecast { "forecast" } else { "weather" });
        let body = HttpClient::from_env(timeout)?.get_json(&url, &query).map_err(|e| match e {
            ironclaw_plugin_sdk::http::HttpError::Status { code: 404, body } => PluginError::InvalidInput(format!(
                "{SERVICE}: {}",
                upstream_message(&body).unwrap_or_else(|| "location not found".into())
            )),
            other => other.describe(SERVICE, upstream_message),
        })?;
        if forecast {
            let list = body["list"].as_array().ok_or_else(|| {
                PluginError::Failed(format!("{SERVICE} sent a malformed response: no forecast 'list'"))
            })?;
            let steps = list
                .iter()
                .map(|entry| {
                    let mut c = conditions(entry)?;
                    c["time"] = entry["dt_txt"].clone();
                    Ok(c)
                })
                .collect::<Result<Vec<Value>, PluginError>>()?;
            Ok(json!({
                "location": body["city"]["name"],
                "country": body["city"]["country"],
                "units": unit_names(units),
                "forecast": steps,
            }))
        } else {
            let mut current = conditions(&body)?;
            current["location"] = body["name"].clone();
            current["country"] = body["sys"]["country"].clone();
            current["units"] = unit_names(units);
            Ok(current)
        }
    }
}

export_plugin!(Weather);
