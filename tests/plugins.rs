//! The shipped plugins, through the real daemon and sandbox, against local stand-ins for their
//! web APIs (mock servers on 127.0.0.2 answering in each service's real response format).

mod common;

use std::path::Path;

use common::upstreams::{SECRETS, duckduckgo, newsapi, openweathermap};
use common::{Daemon, MockServer, TestCa};
use serde_json::{Value, json};

/// A daemon running `plugin` with `grant` (a `[plugins.<plugin>]` body), `hosts` mapped to
/// `upstream` by the proxy, and the test secrets.
async fn daemon_for(plugin: &str, grant: &str, hosts: &[&str], upstream: Option<&MockServer>) -> Daemon {
    daemon_with_secrets(plugin, grant, hosts, upstream, SECRETS).await
}

async fn daemon_with_secrets(
    plugin: &str,
    grant: &str,
    hosts: &[&str],
    upstream: Option<&MockServer>,
    secrets: &str,
) -> Daemon {
    let policy = format!("{}\n[plugins.{plugin}]\n{grant}\n", common::DEFAULT_POLICY);
    let mut builder = Daemon::builder().plugins(&[plugin]).policy(&policy).secrets(secrets);
    for host in hosts {
        builder = builder.proxy_host(host, &upstream.unwrap().target());
    }
    let d = builder.start().await;
    let info = d.get(&format!("/api/v1/plugins/{plugin}")).await.body;
    assert_eq!(info["state"], "enabled", "{info}");
    d
}

// ---------------------------------------------------------------- calculator

#[tokio::test]
async fn calculator() {
    require_root!();
    let d = daemon_for("calculator", "", &[], None).await;
    let r = d.exec("calculator", json!({"expression": "sqrt(16) + sin(pi/2)"})).await;
    assert_eq!((r["status"].as_str(), &r["data"]["result"]), (Some("success"), &json!(5)), "{r}");
    let r = d.exec("calculator", json!({"expression": "1/0"})).await;
    assert_eq!((r["status"].as_str(), r["error"].as_str()), (Some("invalid_input"), Some("division by zero")), "{r}");
}

// ---------------------------------------------------------------- file_ops

#[tokio::test]
async fn file_ops_works_inside_its_workspace_only() {
    require_root!();
    let d = daemon_for("file_ops", "workspace = \"4MiB\"", &[], None).await;
    let op = |params: Value| d.exec("file_ops", params);
    let ok = |r: &Value| assert_eq!(r["status"], "success", "{r}");

    ok(&op(json!({"operation": "mkdir", "path": "notes/2026"})).await);
    ok(&op(json!({"operation": "write", "path": "notes/2026/a.txt", "content": "hello"})).await);
    ok(&op(json!({"operation": "append", "path": "notes/2026/a.txt", "content": ", world"})).await);
    ok(&op(json!({"operation": "write", "path": "notes/b.md", "content": "# world news"})).await);
    let r = op(json!({"operation": "read", "path": "notes/2026/a.txt"})).await;
    assert_eq!(r["data"]["content"], "hello, world", "{r}");
    let r = op(json!({"operation": "stat", "path": "notes/2026/a.txt"})).await;
    assert_eq!((r["data"]["type"].as_str(), r["data"]["size"].as_u64()), (Some("file"), Some(12)), "{r}");
    let r = op(json!({"operation": "list", "path": "notes", "recursive": true})).await;
    let paths: Vec<&str> =
        r["data"]["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["notes/2026", "notes/2026/a.txt", "notes/b.md"], "{r}");
    let r = op(json!({"operation": "search", "pattern": "*.txt"})).await;
    assert_eq!(r["data"]["matches"].as_array().unwrap().len(), 1, "{r}");
    let r = op(json!({"operation": "search", "contains": "world"})).await;
    assert_eq!(r["data"]["matches"].as_array().unwrap().len(), 2, "{r}");
    let r = op(json!({"operation": "delete", "path": "notes"})).await;
    assert_eq!(r["status"], "invalid_input", "a non-empty directory needs recursive: {r}");
    ok(&op(json!({"operation": "delete", "path": "notes", "recursive": true})).await);
    let r = op(json!({"operation": "read", "path": "notes/b.md"})).await;
    assert_eq!(r["status"], "invalid_input", "{r}");
    assert!(r["error"].as_str().unwrap().contains("no such file"), "{r}");

    // Traversal gets a clear error from the plugin (and the kernel would deny it anyway).
    for (path, message) in
        [("../../etc/passwd", "'..' is not allowed"), ("/etc/passwd", "absolute paths are not allowed")]
    {
        let r = op(json!({"operation": "read", "path": path})).await;
        assert_eq!(r["status"], "invalid_input", "{r}");
        assert!(r["error"].as_str().unwrap().contains(message), "{r}");
    }
    let ws = d.workspace("file_ops");
    std::os::unix::fs::symlink("/etc", ws.join("etc")).unwrap();
    let r = op(json!({"operation": "read", "path": "etc/passwd"})).await;
    assert!(r["error"].as_str().unwrap().contains("leads outside the workspace"), "{r}");

    // Size limits: 1 MiB per file.
    let chunk = "x".repeat(600 * 1024);
    ok(&op(json!({"operation": "write", "path": "big", "content": chunk})).await);
    let r = op(json!({"operation": "append", "path": "big", "content": chunk})).await;
    assert_eq!(r["status"], "invalid_input", "{r}");
    assert!(r["error"].as_str().unwrap().contains("would exceed 1048576 bytes"), "{r}");
}

// ---------------------------------------------------------------- weather

const WEATHER_GRANT: &str = r#"network = ["api.openweathermap.org"]
secrets = ["OPENWEATHER_API_KEY"]
private_addresses = ["127.0.0.2"]
config = { base_url = "http://api.openweathermap.org/data/2.5", timeout_s = 1 }"#;

#[tokio::test]
async fn weather_current_and_forecast_with_units() {
    require_root!();
    let owm = MockServer::start("127.0.0.2", openweathermap);
    let d = daemon_for("weather", WEATHER_GRANT, &["api.openweathermap.org"], Some(&owm)).await;
    let r = d.exec("weather", json!({"location": "London,GB"})).await;
    assert_eq!(r["status"], "success", "{r}");
    let w = &r["data"];
    assert_eq!((w["location"].as_str(), w["country"].as_str()), (Some("London,GB"), Some("GB")), "{r}");
    assert_eq!((w["temperature"].as_f64(), w["humidity"].as_u64()), (Some(11.2), Some(81)));
    assert_eq!(w["description"], "overcast clouds");
    assert_eq!(w["units"], json!({"temperature": "°C", "wind_speed": "m/s"}));
    let request = &owm.requests()[0];
    assert_eq!((request.path(), request.query("units").as_deref()), ("/data/2.5/weather", Some("metric")));

    let r = d.exec("weather", json!({"location": "Boston", "units": "imperial", "kind": "forecast", "count": 3})).await;
    assert_eq!(r["status"], "success", "{r}");
    let steps = r["data"]["forecast"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        (steps[0]["temperature"].as_f64(), steps[0]["time"].as_str()),
        (Some(52.2), Some("2026-11-25 00:00:00"))
    );
    assert_eq!(r["data"]["units"]["temperature"], "°F");
    assert_eq!(owm.requests()[1].path(), "/data/2.5/forecast");

    let r = d.exec("weather", json!({"lat": 51.5, "lon": -0.12})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(owm.requests()[2].query("lat").as_deref(), Some("51.5"));
    let r = d.exec("weather", json!({"lat": 51.5})).await;
    assert_eq!(r["status"], "invalid_input", "{r}");
}

#[tokio::test]
async fn weather_upstream_failures_are_clear_errors() {
    require_root!();
    let owm = MockServer::start("127.0.0.2", openweathermap);
    let d = daemon_for("weather", WEATHER_GRANT, &["api.openweathermap.org"], Some(&owm)).await;
    for (location, status, message) in [
        ("Nowhere", "invalid_input", "OpenWeatherMap: city not found"),
        ("Throttled", "error", "OpenWeatherMap rate limit exceeded (HTTP 429)"),
        ("Broken", "error", "OpenWeatherMap is failing (HTTP 502)"),
        ("Garbled", "error", "OpenWeatherMap sent a malformed response"),
        ("Slow", "error", "OpenWeatherMap did not answer in time"),
    ] {
        let r = d.exec("weather", json!({"location": location})).await;
        assert_eq!(r["status"], status, "{location}: {r}");
        assert!(r["error"].as_str().unwrap().contains(message), "{location}: {r}");
    }
    // A wrong key: the daemon supplies another value for the secret.
    let hosts = ["api.openweathermap.org"];
    let d = daemon_with_secrets("weather", WEATHER_GRANT, &hosts, Some(&owm), "OPENWEATHER_API_KEY = \"wrong-key\"\n")
        .await;
    let r = d.exec("weather", json!({"location": "London"})).await;
    assert_eq!(r["status"], "error");
    assert!(
        r["error"].as_str().unwrap().contains("OpenWeatherMap rejected the API key (HTTP 401/403): Invalid API key"),
        "{r}"
    );
}

// ---------------------------------------------------------------- web_search

const SEARCH_GRANT: &str = r#"network = ["api.duckduckgo.com", "html.duckduckgo.com"]
private_addresses = ["127.0.0.2"]
config = { api_url = "http://api.duckduckgo.com/", html_url = "http://html.duckduckgo.com/html/", timeout_s = 2 }"#;

#[tokio::test]
async fn web_search_instant_answers_and_html_results() {
    require_root!();
    let ddg = MockServer::start("127.0.0.2", duckduckgo);
    let d = daemon_for("web_search", SEARCH_GRANT, &["api.duckduckgo.com", "html.duckduckgo.com"], Some(&ddg)).await;
    let r = d.exec("web_search", json!({"query": "rust language", "max_results": 3})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["source"], "instant");
    let results = r["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0],
        json!({
            "title": "Rust (programming language)",
            "url": "https://en.wikipedia.org/wiki/Rust_(programming_language)",
            "snippet": "Rust is a general-purpose programming language."
        })
    );
    assert_eq!(ddg.requests()[0].query("q").as_deref(), Some("rust language"));
    assert_eq!(ddg.requests()[0].query("format").as_deref(), Some("json"));

    // No instant answer: the HTML results page, parsed.
    let r = d.exec("web_search", json!({"query": "obscure"})).await;
    assert_eq!(r["data"]["source"], "html", "{r}");
    assert_eq!(
        r["data"]["results"][0],
        json!({
            "title": "Rust Programming Language",
            "url": "https://www.rust-lang.org/",
            "snippet": "A language empowering everyone to build obscure software."
        })
    );
    assert_eq!(r["data"]["results"][1]["title"], "The Rust Programming Language & Book");
    assert_eq!(r["data"]["results"][1]["url"], "https://doc.rust-lang.org/book/");

    for (query, message) in
        [("broken", "DuckDuckGo is failing (HTTP 500)"), ("garbled", "DuckDuckGo sent a malformed response")]
    {
        let r = d.exec("web_search", json!({"query": query})).await;
        assert_eq!(r["status"], "error", "{r}");
        assert!(r["error"].as_str().unwrap().contains(message), "{query}: {r}");
    }
    let r = d.exec("web_search", json!({"query": "broken", "source": "html"})).await;
    assert!(r["error"].as_str().unwrap().contains("DuckDuckGo is failing (HTTP 503)"), "{r}");
}

// ---------------------------------------------------------------- news (Python)

const NEWS_GRANT: &str = r#"network = ["newsapi.org"]
secrets = ["NEWSAPI_KEY"]
private_addresses = ["127.0.0.2"]
config = { base_url = "http://newsapi.org/v2", timeout_s = 1 }"#;

#[tokio::test]
async fn news_in_python_under_the_same_sandbox() {
    require_root!();
    let api = MockServer::start("127.0.0.2", newsapi);
    let d = daemon_for("news", NEWS_GRANT, &["newsapi.org"], Some(&api)).await;
    let r = d.exec("news", json!({"country": "gb", "category": "technology", "page_size": 2})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["total_results"], 2);
    assert_eq!(
        r["data"]["articles"][0],
        json!({
            "title": "First headline", "source": "BBC News", "author": "BBC News",
            "url": "https://www.bbc.co.uk/news/14", "description": "A description.", "published_at": "2026-11-25T09:00:00Z"
        })
    );
    let request = &api.requests()[0];
    assert_eq!(request.path(), "/v2/top-headlines");
    assert_eq!(
        (request.query("country").as_deref(), request.query("category").as_deref()),
        (Some("gb"), Some("technology"))
    );
    assert!(request.target.contains("pageSize=2"), "{}", request.target);
    // The sandbox's layers are the same as for native plugins.
    assert_eq!(r["layers"]["sandbox"]["seccomp"], true);
    assert_eq!(r["layers"]["sandbox"]["landlock"]["status"], "fully_enforced");

    let r = d.exec("news", json!({"endpoint": "everything", "query": "sandboxing", "sort_by": "publishedAt"})).await;
    assert_eq!(r["data"]["articles"][0]["title"], "About sandboxing", "{r}");
    assert_eq!(api.requests()[1].query("sortBy").as_deref(), Some("publishedAt"));
    let r = d.exec("news", json!({"endpoint": "everything"})).await;
    assert_eq!(r["status"], "invalid_input", "{r}");

    for (query, message) in [
        ("throttled", "NewsAPI rate limit exceeded (HTTP 429), retry later: You have been rate limited"),
        ("broken", "NewsAPI is failing (HTTP 500)"),
        ("garbled", "NewsAPI sent a malformed response"),
        ("slow", "NewsAPI did not answer in time"),
    ] {
        let r = d.exec("news", json!({"endpoint": "everything", "query": query})).await;
        assert_eq!(r["status"], "error", "{query}: {r}");
        assert!(r["error"].as_str().unwrap().contains(message), "{query}: {r}");
    }
}

#[tokio::test]
async fn news_with_a_bad_key() {
    require_root!();
    let api = MockServer::start("127.0.0.2", newsapi);
    let d = daemon_with_secrets("news", NEWS_GRANT, &["newsapi.org"], Some(&api), "NEWSAPI_KEY = \"wrong-news-key\"\n")
        .await;
    let r = d.exec("news", json!({})).await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("NewsAPI rejected the API key (HTTP 401): Your API key is invalid"),
        "{r}"
    );
}

// ---------------------------------------------------------------- HTTPS end to end

/// The weather plugin (native, the SDK's rustls client) and the news plugin (Python's `ssl`),
/// granted their real hosts over HTTPS. The proxy maps each host's port 443 to a TLS stand-in
/// whose certificate, signed by `ca`, names its host (or `other_name`); the daemon adds `ca` to
/// the sandbox's trust when `trusted`.
async fn https_daemon(
    ca: &TestCa,
    other_name: Option<&str>,
    trusted: bool,
    dir: &Path,
) -> (Daemon, MockServer, MockServer) {
    let (weather_host, news_host) = ("api.openweathermap.org", "newsapi.org");
    let owm = MockServer::start_tls("127.0.0.2", ca.server(&[other_name.unwrap_or(weather_host)]), openweathermap);
    let news = MockServer::start_tls("127.0.0.2", ca.server(&[other_name.unwrap_or(news_host)]), newsapi);
    let grant = |plugin: &str, host: &str, secret: &str, base: &str| {
        format!(
            "[plugins.{plugin}]\nnetwork = [\"{host}\"]\nsecrets = [\"{secret}\"]\nprivate_addresses = [\"127.0.0.2\"]\n\
             config = {{ base_url = \"https://{host}{base}\", timeout_s = 5 }}\n"
        )
    };
    let policy = format!(
        "{}\n{}{}",
        common::DEFAULT_POLICY,
        grant("weather", weather_host, "OPENWEATHER_API_KEY", "/data/2.5"),
        grant("news", news_host, "NEWSAPI_KEY", "/v2")
    );
    let mut builder = Daemon::builder()
        .plugins(&["weather", "news"])
        .policy(&policy)
        .secrets(SECRETS)
        .proxy_host(&format!("{weather_host}:443"), &owm.target())
        .proxy_host(&format!("{news_host}:443"), &news.target());
    if trusted {
        let ca_file = ca.write_pem(&dir.join("private-ca.pem"));
        builder = builder.config(&format!("ca_certificates = [{ca_file:?}]\n"));
    }
    (builder.start().await, owm, news)
}

/// TLS runs from the plugin to its upstream through the proxy's CONNECT tunnel, checked
/// against the sandbox's trust with the admin's private CA added; the proxy carries only
/// ciphertext.
#[tokio::test]
async fn https_reaches_an_upstream_signed_by_an_admins_private_ca() {
    require_root!();
    let (ca, dir) = (TestCa::new("Ironclaw test private CA"), tempfile::tempdir().unwrap());
    let (d, owm, news) = https_daemon(&ca, None, true, dir.path()).await;
    let r = d.exec("weather", json!({"location": "London,GB"})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["temperature"], 11.2, "{r}");
    // (ureq sends the absolute form inside the tunnel too, which servers must accept.)
    let request = &owm.requests()[0];
    assert!(request.path().ends_with("api.openweathermap.org/data/2.5/weather"), "{}", request.target);
    assert_eq!(request.query("appid").as_deref(), Some("test-owm-key"));

    let r = d.exec("news", json!({"country": "gb"})).await;
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["data"]["articles"][0]["title"], "First headline", "{r}");
    assert_eq!(news.requests()[0].header("x-api-key"), Some("test-news-key"));

    // What crossed the proxy is a TLS session: a handshake record first, and neither the key
    // nor the request in the clear.
    for (upstream, secret) in [(&owm, "test-owm-key"), (&news, "test-news-key")] {
        let wire = upstream.wire();
        assert_eq!(wire.first(), Some(&0x16), "a TLS handshake record opens the tunnel");
        for plaintext in [secret.as_bytes(), b"GET /", b"Host:"] {
            let clear = wire.windows(plaintext.len()).any(|w| w == plaintext);
            assert!(!clear, "{:?} crossed the proxy in the clear", String::from_utf8_lossy(plaintext));
        }
    }
}

/// A certificate for another name, or from an authority the sandbox does not trust, fails the
/// request with an error that says so; no request reaches the upstream.
#[tokio::test]
async fn https_to_an_upstream_with_the_wrong_certificate_fails_clearly() {
    require_root!();
    let (ca, dir) = (TestCa::new("Ironclaw test private CA"), tempfile::tempdir().unwrap());
    for (other_name, trusted, weather_error, news_error) in [
        (Some("other.example"), true, "certificate not valid for name \"api.openweathermap.org\"", "Hostname mismatch"),
        (None, false, "UnknownIssuer", "CERTIFICATE_VERIFY_FAILED"),
    ] {
        let (d, owm, news) = https_daemon(&ca, other_name, trusted, dir.path()).await;
        let r = d.exec("weather", json!({"location": "London,GB"})).await;
        assert_eq!(r["status"], "error", "{r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("cannot reach OpenWeatherMap: its TLS certificate was refused"), "{error}");
        assert!(error.contains(weather_error), "{error}");
        let r = d.exec("news", json!({"country": "gb"})).await;
        assert_eq!(r["status"], "error", "{r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("cannot reach NewsAPI: its TLS certificate was refused"), "{error}");
        assert!(error.contains(news_error), "{error}");
        assert!(owm.requests().is_empty() && news.requests().is_empty());
    }
}
