//! Extractors whose rejections use the API's error format: JSON bodies (refusing over-deep
//! documents before parsing), queries, and the path segments that name plugins and executions,
//! checked as they are extracted.
#![forbid(unsafe_code)]

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::catalog::manifest::valid_name;

/// Nesting deeper than this is refused before parsing: no request needs it, and deep input
/// costs stack in every consumer (the schema validator, the plugin's own parser).
pub const MAX_JSON_DEPTH: usize = 64;

/// `Json` whose rejections use our error format, and which refuses over-deep documents.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a request with `content-type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_request" };
            ApiError::new(status, code, r.body_text())
        })?;
        if json_depth(&bytes) > MAX_JSON_DEPTH {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "json_too_deep",
                format!("the request nests JSON deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// The deepest nesting of arrays and objects in `bytes`, strings skipped. Malformed input gets
/// some answer; the parser rejects it afterwards.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// An axum extractor of the request's parts whose rejections use our error format.
macro_rules! answered_in_our_format {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for $name<T> {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                match $inner::<T>::from_request_parts(parts, state).await {
                    Ok($inner(v)) => Ok($name(v)),
                    Err(r) => Err(ApiError::new(r.status(), "invalid_request", r.body_text())),
                }
            }
        }
    };
}

answered_in_our_format!(
    /// `Query`, answered in our error format.
    ApiQuery wraps Query
);
answered_in_our_format!(
    /// `Path` (e.g. a segment that is not UTF-8), answered in our error format.
    ApiPath wraps Path
);

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_request",
    };
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    ApiError::new(status, code, r.body_text())
}

/// A plugin's name in a path: what `manifest::valid_name` accepts. Anything else is answered
/// 404 as extracted, so no handler sees a name that could reach a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PluginName {
    /// Lower-case letters, digits and `_`, starting with a letter.
    #[param(pattern = r"^[a-z][a-z0-9_]{0,63}$")]
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for PluginName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(Self { name }) = ApiPath::<Self>::from_request_parts(parts, state).await?;
        if !valid_name(&name) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", format!("no plugin named {name:?}")));
        }
        Ok(Self { name })
    }
}

/// An execution's id in a path, checked as it is extracted like [`PluginName`].
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExecutionId {
    /// 32 lower-case hex digits.
    #[param(pattern = r"^[0-9a-f]{32}$")]
    pub id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ExecutionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(Self { id }) = ApiPath::<Self>::from_request_parts(parts, state).await?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "execution_not_found",
                format!("no execution with id {id:?}"),
            ));
        }
        Ok(Self { id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{"}"#), 1);
        assert_eq!(json_depth(br#"{"a": "\"[[[", "b": [[]]}"#), 3, "an escaped quote does not end the string");
        assert_eq!(json_depth(b"]]]]"), 0);
        assert_eq!(json_depth(&[b'['; 1000]), 1000);
    }

    /// The depth serde_json's parser sees: the oracle for the scanner.
    fn parsed_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(items) => 1 + items.iter().map(parsed_depth).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(parsed_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn random(seed: &mut u64) -> usize {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as usize
    }

    /// A string full of brackets, quotes and backslashes (escaped as JSON requires).
    fn tricky(seed: &mut u64) -> String {
        let n = random(seed);
        (0..n % 9).map(|i| ['[', ']', '{', '}', '"', '\\', 'a', ':', ','][(n + i) % 9]).collect()
    }

    /// A pseudo-random JSON document: nested arrays and objects, tricky strings and keys.
    fn document(seed: &mut u64, depth: usize) -> serde_json::Value {
        match (depth, random(seed) % 4) {
            (0, _) | (_, 0) => serde_json::Value::String(tricky(seed)),
            (_, 1) => serde_json::Value::from(random(seed) as u64),
            (_, 2) => (0..random(seed) % 4).map(|_| document(seed, depth - 1)).collect(),
            _ => (0..random(seed) % 4).map(|_| (tricky(seed), document(seed, depth - 1))).collect(),
        }
    }

    #[test]
    fn json_depth_agrees_with_serde_json_on_every_document() {
        let mut seed = 7;
        for _ in 0..5000 {
            let value = document(&mut seed, 12);
            let text = serde_json::to_string(&value).unwrap();
            assert_eq!(json_depth(text.as_bytes()), parsed_depth(&value), "{text}");
        }
    }
}
