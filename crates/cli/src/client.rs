//! A small HTTP/1.1 client for the daemon's API, over its unix socket or TCP. Used by the CLI,
//! the tests and the benchmark.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the daemon at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("HTTP exchange with the daemon failed")]
    Http(#[source] hyper::Error),
    #[error("invalid request")]
    Request(#[source] hyper::http::Error),
    #[error("the daemon's answer is not JSON: {0}")]
    Decode(String),
    #[error("invalid --url {0:?}: expected http://host:port")]
    Url(String),
}

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// `http://host:port` for TCP.
    pub fn from_url(url: &str) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| ClientError::Url(url.into()))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::Url(url.into()));
        }
        Ok(Endpoint::Tcp(authority.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// A bearer token, for the TCP API.
    token: Option<String>,
}

/// A decoded answer: the status and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client { endpoint, token: None }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.send(Method::POST, path, Some(body.to_string().into_bytes())).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.send(Method::PUT, path, Some(body.to_string().into_bytes())).await
    }

    /// Posts JSON with extra headers (an MCP request's protocol headers, say).
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        self.send_with_headers(Method::POST, path, Some(body.to_string().into_bytes()), headers).await
    }

    /// Sends raw bytes as the body (for tests of malformed input).
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer, ClientError> {
        self.send_with_headers(method, path, body, &[]).await
    }

    pub async fn send_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let (host, mut sender) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
                ("localhost".to_string(), handshake(stream).await?)
            }
            Endpoint::Tcp(addr) => {
                let stream =
                    tokio::net::TcpStream::connect(addr).await.map_err(|e| ClientError::Connect(addr.clone(), e))?;
                (addr.clone(), handshake(stream).await?)
            }
        };
        let mut builder = Request::builder().method(method).uri(path).header("host", host);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(ClientError::Request)?;
        let response = sender.send_request(request).await.map_err(ClientError::Http)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.map_err(ClientError::Http)?.to_bytes();
        let json = headers.get("content-type").is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        let body = if bytes.is_empty() {
            Value::Null
        } else if !json {
            // Text, or server-sent events (an MCP session's answers), as a string.
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|_| ClientError::Decode(String::from_utf8_lossy(&bytes).chars().take(200).collect()))?
        };
        Ok(Answer { status, headers, body })
    }
}

impl Client {
    /// Opens `path` and switches the connection to `protocol` (`101 Switching Protocols`): the
    /// raw stream, for `ironclaw mcp`. A refusal comes back as the daemon's answer.
    pub async fn upgrade(&self, path: &str, protocol: &str) -> Result<Result<Upgraded, Answer>, ClientError> {
        let (host, stream): (String, Box<dyn Stream>) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
                ("localhost".into(), Box::new(stream))
            }
            Endpoint::Tcp(addr) => {
                let stream =
                    tokio::net::TcpStream::connect(addr).await.map_err(|e| ClientError::Connect(addr.clone(), e))?;
                (addr.clone(), Box::new(stream))
            }
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ClientError::Http)?;
        tokio::spawn(connection.with_upgrades());
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", host)
            .header("connection", "upgrade")
            .header("upgrade", protocol);
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder.body(Full::new(Bytes::new())).map_err(ClientError::Request)?;
        let response = sender.send_request(request).await.map_err(ClientError::Http)?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (status, headers) = (response.status(), response.headers().clone());
            let bytes = response.into_body().collect().await.map_err(ClientError::Http)?.to_bytes();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
            return Ok(Err(Answer { status, headers, body }));
        }
        Ok(Ok(hyper::upgrade::on(response).await.map_err(ClientError::Http)?))
    }
}

/// A connection to the daemon, either kind.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

async fn handshake<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ClientError::Http)?;
    tokio::spawn(connection);
    Ok(sender)
}
