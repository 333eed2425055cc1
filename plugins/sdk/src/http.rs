//! HTTP for plugins that call web APIs (feature `http`). Inside the sandbox the only way out is
//! the daemon's egress proxy, which the runner announces in `HTTPS_PROXY`; this client always
//! goes through it, and turns every upstream failure into a clear [`PluginError`].

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::PluginError;

/// What a refused certificate means, and what an admin can do about a private CA.
const CERTIFICATE_REFUSED: &str = "its TLS certificate was refused; a server signed by a private CA needs the CA in the daemon's runner.ca_certificates";

/// The largest response body read.
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// How a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// The server answered with an error status; `body` is its (truncated) text.
    Status { code: u16, body: String },
    /// The proxy refused the target (policy) or could not reach it.
    Refused(String),
    /// No answer in time.
    Timeout,
    /// The server's TLS certificate was refused: not for its name, expired, or from an
    /// authority the sandbox does not trust.
    Certificate(String),
    /// Connection-level failure.
    Transport(String),
    /// The body is not the expected JSON.
    Malformed(String),
}

impl HttpError {
    /// A plugin error naming the service. `detail` extracts the service's own error message
    /// from an error body, when it has one.
    pub fn describe(self, service: &str, detail: impl Fn(&str) -> Option<String>) -> PluginError {
        let explain = |body: &str| detail(body).map(|d| format!(": {d}")).unwrap_or_default();
        let message = match self {
            HttpError::Status { code: 401 | 403, body } => {
                format!("{service} rejected the API key (HTTP 401/403){}", explain(&body))
            }
            HttpError::Status { code: 429, body } => {
                format!("{service} rate limit exceeded (HTTP 429), retry later{}", explain(&body))
            }
            HttpError::Status { code, body } if code >= 500 => {
                format!("{service} is failing (HTTP {code}){}", explain(&body))
            }
            HttpError::Status { code, body } => format!("{service} answered HTTP {code}{}", explain(&body)),
            HttpError::Refused(m) => format!("cannot reach {service}: {m}"),
            HttpError::Timeout => format!("{service} did not answer in time"),
            HttpError::Certificate(m) => format!("cannot reach {service}: {CERTIFICATE_REFUSED} ({m})"),
            HttpError::Transport(m) => format!("cannot reach {service}: {m}"),
            HttpError::Malformed(m) => format!("{service} sent a malformed response: {m}"),
        };
        PluginError::Failed(message)
    }
}

pub struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    /// A client through the proxy in `HTTPS_PROXY` (none outside a sandbox), with `timeout`
    /// for the whole of each request.
    pub fn from_env(timeout: Duration) -> Result<Self, PluginError> {
        let mut builder = ureq::AgentBuilder::new().timeout(timeout).user_agent("ironclaw-plugin/1");
        if let Ok(url) = std::env::var("HTTPS_PROXY") {
            let proxy =
                ureq::Proxy::new(&url).map_err(|e| PluginError::Failed(format!("invalid HTTPS_PROXY {url:?}: {e}")))?;
            builder = builder.proxy(proxy);
        }
        Ok(HttpClient { agent: builder.build() })
    }

    /// GETs `url` with `query` and returns the body.
    pub fn get_text(&self, url: &str, query: &[(&str, &str)]) -> Result<String, HttpError> {
        let mut request = self.agent.get(url);
        for (k, v) in query {
            request = request.query(k, v);
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                return Err(HttpError::Status { code, body: read_body(r).unwrap_or_default() });
            }
            Err(ureq::Error::Transport(t)) => return Err(transport_error(&t)),
        };
        read_body(response)
    }

    /// GETs `url` with `query` and parses the JSON body.
    pub fn get_json(&self, url: &str, query: &[(&str, &str)]) -> Result<Value, HttpError> {
        let text = self.get_text(url, query)?;
        serde_json::from_str(&text).map_err(|e| HttpError::Malformed(format!("not JSON ({e})")))
    }
}

fn read_body(response: ureq::Response) -> Result<String, HttpError> {
    let mut body = String::new();
    response.into_reader().take(MAX_BODY).read_to_string(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
            HttpError::Timeout
        } else {
            HttpError::Malformed(format!("unreadable body ({e})"))
        }
    })?;
    Ok(body)
}

fn transport_error(t: &ureq::Transport) -> HttpError {
    let text = t.to_string();
    match t.kind() {
        ureq::ErrorKind::ProxyConnect | ureq::ErrorKind::ProxyUnauthorized => {
            HttpError::Refused(format!("the egress proxy refused the connection ({text})"))
        }
        _ if text.contains("invalid peer certificate") => HttpError::Certificate(text),
        ureq::ErrorKind::Io if text.contains("timed out") || text.contains("Timeout") => HttpError::Timeout,
        _ => HttpError::Transport(text),
    }
}
