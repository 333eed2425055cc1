//! web_search: DuckDuckGo's Instant Answer API and its HTML results page, parsed into
//! `{title, url, snippet}`, through the sandbox's egress proxy.
//!
//! Config (from policy): `api_url`, `html_url`, `timeout_s`.

use std::time::Duration;

use ironclaw_plugin_sdk::http::{HttpClient, HttpError};
use ironclaw_plugin_sdk::{Context, Plugin, PluginError, export_plugin};
use serde_json::{Value, json};

const DEFAULT_API_URL: &str = "https://api.duckduckgo.com/";
const DEFAULT_HTML_URL: &str = "https://html.duckduckgo.com/html/";
const SERVICE: &str = "DuckDuckGo";

#[derive(Default)]
pub struct WebSearch;

fn no_detail(_: &str) -> Option<String> {
    None
}

fn describe(e: HttpError) -> PluginError {
    e.describe(SERVICE, no_detail)
}

/// Results of the Instant Answer API: the abstract, direct results, then related topics
/// (which nest one level in named groups).
fn instant_results(body: &Value, max: usize) -> Vec<Value> {
    let mut out = Vec::new();
    if let (Some(text), Some(url)) = (body["AbstractText"].as_str(), body["AbstractURL"].as_str())
        && !text.is_empty()
    {
        let title = body["Heading"].as_str().unwrap_or(text);
        out.push(json!({"title": title, "url": url, "snippet": text}));
    }
    let topics = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let flat = topics(&body["Results"]).into_iter().chain(topics(&body["RelatedTopics"]).into_iter().flat_map(|t| {
        match t.get("Topics") {
            Some(nested) => topics(nested),
            None => vec![t],
        }
    }));
    for topic in flat {
        if let (Some(text), Some(url)) = (topic["Text"].as_str(), topic["FirstURL"].as_str()) {
            let title = text.split(" - ").next().unwrap_or(text);
            out.push(json!({"title": title, "url": url, "snippet": text}));
        }
    }
    out.truncate(max);
    out
}

/// Text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed.
fn html_text(fragment: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in fragment.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let decoded = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// DuckDuckGo links go through a redirect (`//duckduckgo.com/l/?uddg=<url>`): the target.
fn result_url(href: &str) -> String {
    let href = href.replace("&amp;", "&");
    match href.split_once("uddg=") {
        Some((_, rest)) => percent_decode(rest.split('&').next().unwrap_or(rest)),
        None if href.starts_with("//") => format!("https:{href}"),
        None => href,
    }
}

/// The element whose opening tag contains `class="<class>"`, from `from`: (attributes, inner
/// HTML, end offset).
fn element<'a>(html: &'a str, class: &str, from: usize) -> Option<(&'a str, &'a str, usize)> {
    let marker = format!("class=\"{class}\"");
    let at = from + html[from..].find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let name: String = html[tag_start + 1..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    let close = format!("</{name}>");
    let inner_end = tag_end + 1 + html[tag_end + 1..].find(&close)?;
    Some((&html[tag_start..tag_end], &html[tag_end + 1..inner_end], inner_end))
}

fn html_results(html: &str, max: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0;
    while out.len() < max {
        let Some((attrs, title, end)) = element(html, "result__a", from) else { break };
        let href = attrs.split("href=\"").nth(1).and_then(|h| h.split('"').next()).unwrap_or_default();
        let next_title = html[end..].find("class=\"result__a\"").map_or(html.len(), |n| end + n);
        let snippet = element(html, "result__snippet", end)
            .filter(|(_, _, e)| *e <= next_title)
            .map(|(_, inner, _)| html_text(inner))
            .unwrap_or_default();
        out.push(json!({"title": html_text(title), "url": result_url(href), "snippet": snippet}));
        from = end;
    }
    out
}

impl Plugin for WebSearch {
    fn execute(&self, p: &Value, context: &Context<'_>) -> Result<Value, PluginError> {
        let query = p["query"].as_str().filter(|q| !q.trim().is_empty());
        let query = query.ok_or_else(|| PluginError::InvalidInput("'query' must not be empty".into()))?;
        let max = p["max_results"].as_u64().unwrap_or(5).clamp(1, 25) as usize;
        let source = p["source"].as_str().unwrap_or("auto");
        let config = context.config;
        let timeout = Duration::from_secs(config["timeout_s"].as_u64().unwrap_or(10));
        let client = HttpClient::from_env(timeout)?;
        let mut results = Vec::new();
        let mut used = "instant";
        if source != "html" {
            let url = config["api_url"].as_str().unwrap_or(DEFAULT_API_URL);
            let query = [("q", query), ("format", "json"), ("no_html", "1"), ("skip_disambig", "1")];
            let body = client.get_json(url, &query).map_err(describe)?;
            if !body.is_object() {
                return Err(PluginError::Failed(format!("{SERVICE} sent a malformed response: not a JSON object")));
            }
            results = instant_results(&body, max);
        }
        if source == "html" || (source == "auto" && results.is_empty()) {
            used = "html";
            let url = config["html_url"].as_str().unwrap_or(DEFAULT_HTML_URL);
            let page = client.get_text(url, &[("q", query)]).map_err(describe)?;
            results = html_results(&page, max);
        }
        Ok(json!({"query": query, "source": used, "results": results}))
    }
}

export_plugin!(WebSearch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_html_results_page() {
        let page = r#"<div class="result results_links"><h2 class="result__title">
<a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.org%2F&amp;rut=x">Rust &amp; <b>Cargo</b></a></h2>
<a class="result__snippet" href="x">A language empowering <b>everyone</b>.</a></div>
<div class="result"><a rel="nofollow" class="result__a" href="https://example.org/">Second</a></div>"#;
        let r = html_results(page, 10);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            json!({"title": "Rust & Cargo", "url": "https://www.rust-lang.org/", "snippet": "A language empowering everyone."})
        );
        assert_eq!(r[1]["snippet"], "", "a snippet is never taken from the next result");
        assert_eq!(html_results(page, 1).len(), 1);
    }

    #[test]
    fn parses_instant_answers() {
        let body = json!({
            "Heading": "Rust", "AbstractText": "A language.", "AbstractURL": "https://en.wikipedia.org/wiki/Rust",
            "Results": [],
            "RelatedTopics": [
                {"Text": "Cargo - the package manager", "FirstURL": "https://duckduckgo.com/Cargo"},
                {"Name": "See also", "Topics": [{"Text": "Crates", "FirstURL": "https://duckduckgo.com/Crates"}]}
            ]
        });
        let r = instant_results(&body, 10);
        let titles: Vec<&str> = r.iter().map(|v| v["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["Rust", "Cargo", "Crates"]);
    }
}
