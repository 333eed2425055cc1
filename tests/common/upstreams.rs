//! Stand-ins for the shipped plugins' web APIs, answering in each service's real response
//! format (and its real failures, by query), for the tests that run those plugins.

use std::time::Duration;

use serde_json::{Value, json};

use super::{MockRequest, MockResponse};

/// The keys the stand-ins accept, as a secrets file holds them.
pub const SECRETS: &str = "OPENWEATHER_API_KEY = \"test-owm-key\"\nNEWSAPI_KEY = \"test-news-key\"\n";

pub fn owm_conditions(name: &str, temp: f64) -> Value {
    json!({
        "coord": {"lon": -0.1257, "lat": 51.5085},
        "weather": [{"id": 804, "main": "Clouds", "description": "overcast clouds", "icon": "04d"}],
        "base": "stations",
        "main": {"temp": temp, "feels_like": temp - 0.7, "temp_min": temp - 1.0, "temp_max": temp + 1.0, "pressure": 1012, "humidity": 81},
        "visibility": 10000,
        "wind": {"speed": 4.63, "deg": 240},
        "clouds": {"all": 100},
        "dt": 1_795_600_000,
        "sys": {"type": 2, "id": 2_075_535, "country": "GB", "sunrise": 1_795_580_000, "sunset": 1_795_610_000},
        "timezone": 0, "id": 2_643_743, "name": name, "cod": 200
    })
}

pub fn openweathermap(r: &MockRequest) -> MockResponse {
    if r.query("appid").as_deref() != Some("test-owm-key") {
        return MockResponse::json(
            401,
            json!({"cod": 401, "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."}),
        );
    }
    let temp = if r.query("units").as_deref() == Some("imperial") { 52.2 } else { 11.2 };
    match r.query("q").as_deref() {
        Some("Nowhere") => MockResponse::json(404, json!({"cod": "404", "message": "city not found"})),
        Some("Throttled") => MockResponse::json(
            429,
            json!({"cod": 429, "message": "Your account is temporary blocked due to exceeding of requests limitation of your subscription type."}),
        ),
        Some("Broken") => MockResponse::text(502, "text/html", "<html><body>Bad Gateway</body></html>"),
        Some("Garbled") => MockResponse::text(200, "application/json", "{\"cod\": 200, \"main\": "),
        Some("Slow") => {
            MockResponse { delay: Duration::from_secs(3), ..MockResponse::json(200, owm_conditions("Slow", temp)) }
        }
        q if r.path().ends_with("/forecast") => {
            let count: usize = r.query("cnt").and_then(|c| c.parse().ok()).unwrap_or(40);
            let list: Vec<Value> = (0..count)
                .map(|i| {
                    let mut step = owm_conditions("", temp + i as f64);
                    step["dt_txt"] = json!(format!("2026-11-25 {:02}:00:00", (i * 3) % 24));
                    step
                })
                .collect();
            MockResponse::json(
                200,
                json!({
                    "cod": "200", "message": 0, "cnt": count, "list": list,
                    "city": {"id": 2_643_743, "name": q.unwrap_or("Coordinates"), "country": "GB", "timezone": 0}
                }),
            )
        }
        q => MockResponse::json(200, owm_conditions(q.unwrap_or("Coordinates"), temp)),
    }
}

pub fn duckduckgo(r: &MockRequest) -> MockResponse {
    let q = r.query("q").unwrap_or_default();
    if r.path().starts_with("/html") {
        return match q.as_str() {
            "broken" => MockResponse::text(503, "text/html", "<html>busy</html>"),
            _ => MockResponse::text(
                200,
                "text/html; charset=UTF-8",
                &format!(
                    r#"<!DOCTYPE html><html><body><div class="serp__results"><div id="links" class="results">
<div class="result results_links results_links_deep web-result "><div class="links_main links_deep result__body">
<h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.org%2F&amp;rut=abc">Rust Programming Language</a></h2>
<div class="result__extras"><div class="result__extras__url"><a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.org%2F">www.rust-lang.org</a></div></div>
<a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.org%2F">A language empowering everyone to build <b>{q}</b> software.</a>
</div></div>
<div class="result results_links results_links_deep web-result "><div class="links_main links_deep result__body">
<h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fdoc.rust%2Dlang.org%2Fbook%2F&amp;rut=def">The Rust Programming Language &amp; Book</a></h2>
<a class="result__snippet" href="x">The book.</a>
</div></div></div></div></body></html>"#
                ),
            ),
        };
    }
    match q.as_str() {
        "broken" => MockResponse::text(500, "text/html", "oops"),
        "garbled" => MockResponse::text(200, "application/x-javascript", "not json"),
        "obscure" => MockResponse::json(
            200,
            json!({"Abstract": "", "AbstractText": "", "AbstractURL": "", "Heading": "", "RelatedTopics": [], "Results": [], "Type": ""}),
        ),
        _ => MockResponse::json(
            200,
            json!({
                "Abstract": "Rust is a general-purpose programming language.",
                "AbstractText": "Rust is a general-purpose programming language.",
                "AbstractSource": "Wikipedia",
                "AbstractURL": "https://en.wikipedia.org/wiki/Rust_(programming_language)",
                "Heading": "Rust (programming language)",
                "Answer": "", "Definition": "", "Type": "A",
                "Results": [{"FirstURL": "https://www.rust-lang.org/", "Text": "Official site", "Result": "<a href=\"https://www.rust-lang.org/\">Official site</a>"}],
                "RelatedTopics": [
                    {"FirstURL": "https://duckduckgo.com/Cargo_(software)", "Text": "Cargo - The Rust package manager.", "Icon": {"URL": ""}},
                    {"Name": "See also", "Topics": [{"FirstURL": "https://duckduckgo.com/Ferris", "Text": "Ferris - The mascot.", "Icon": {"URL": ""}}]}
                ]
            }),
        ),
    }
}

pub fn newsapi(r: &MockRequest) -> MockResponse {
    if r.header("x-api-key") != Some("test-news-key") {
        return MockResponse::json(
            401,
            json!({"status": "error", "code": "apiKeyInvalid", "message": "Your API key is invalid or incorrect. Check your key, or go to https://newsapi.org to create a free API key."}),
        );
    }
    let article = |title: &str| {
        json!({
            "source": {"id": "bbc-news", "name": "BBC News"},
            "author": "BBC News",
            "title": title,
            "description": "A description.",
            "url": format!("https://www.bbc.co.uk/news/{}", title.len()),
            "urlToImage": "https://ichef.bbci.co.uk/x.jpg",
            "publishedAt": "2026-11-25T09:00:00Z",
            "content": "Content [+1234 chars]"
        })
    };
    match r.query("q").as_deref() {
        Some("throttled") => MockResponse::json(
            429,
            json!({"status": "error", "code": "rateLimited", "message": "You have been rate limited. Back off for a while before trying the request again."}),
        ),
        Some("broken") => MockResponse::json(
            500,
            json!({"status": "error", "code": "unexpectedError", "message": "This shouldn't happen, and if it does then it's our fault, not yours."}),
        ),
        Some("garbled") => MockResponse::text(200, "application/json", "{\"status\": \"ok\", \"articles\": ["),
        Some("slow") => MockResponse { delay: Duration::from_secs(3), ..MockResponse::json(200, json!({})) },
        q if r.path() == "/v2/everything" => MockResponse::json(
            200,
            json!({
                "status": "ok", "totalResults": 1, "articles": [article(&format!("About {}", q.unwrap_or_default()))]
            }),
        ),
        _ => MockResponse::json(
            200,
            json!({
                "status": "ok", "totalResults": 2, "articles": [article("First headline"), article("Second headline")]
            }),
        ),
    }
}
