"""Stand-ins for OpenWeatherMap, NewsAPI and DuckDuckGo inside the VM, in each service's real
response format. One HTTP server; the daemon's proxy maps every service's host name to it."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path.endswith("/weather"):
            if q.get("appid") != "vm-owm-key":
                return self.answer(401, {"cod": 401, "message": "Invalid API key."})
            return self.answer(200, {
                "weather": [{"id": 800, "main": "Clear", "description": "clear sky", "icon": "01d"}],
                "main": {"temp": 21.5, "feels_like": 21.0, "pressure": 1015, "humidity": 40},
                "wind": {"speed": 3.1, "deg": 200}, "sys": {"country": "FR"}, "name": q.get("q", "Paris"), "cod": 200,
            })
        if url.path.startswith("/v2/"):
            if self.headers.get("X-Api-Key") != "vm-news-key":
                return self.answer(401, {"status": "error", "code": "apiKeyInvalid", "message": "Your API key is invalid."})
            article = {"source": {"id": None, "name": "VM News"}, "author": "ironclaw", "title": "Sandboxes everywhere",
                       "description": "d", "url": "https://example.org/a", "publishedAt": "2026-11-25T00:00:00Z"}
            return self.answer(200, {"status": "ok", "totalResults": 1, "articles": [article]})
        if q.get("format") == "json":
            return self.answer(200, {
                "Heading": "Sandbox", "AbstractText": "A sandbox is an isolated environment.",
                "AbstractURL": "https://en.wikipedia.org/wiki/Sandbox", "Results": [], "RelatedTopics": [],
            })
        self.answer(404, {"error": "unknown path " + url.path})

    def log_message(self, *args):
        pass


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
