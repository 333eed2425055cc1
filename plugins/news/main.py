"""news: NewsAPI.org top headlines and article search, through the sandbox's egress proxy.

An Ironclaw exec plugin: one JSON request on stdin, one JSON response on stdout (see
plugins/README.md). Python 3 standard library only. urllib takes the proxy from HTTPS_PROXY /
HTTP_PROXY, which the runner sets; the API key arrives as the NEWSAPI_KEY secret.
Config (from policy): base_url (default https://newsapi.org/v2), timeout_s.
"""

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_BASE_URL = "https://newsapi.org/v2"
SERVICE = "NewsAPI"
MAX_BODY = 4 * 1024 * 1024
CERTIFICATE_REFUSED = (
    "its TLS certificate was refused; a server signed by a private CA needs the CA in the daemon's runner.ca_certificates"
)


class Failure(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def upstream_message(body):
    try:
        parsed = json.loads(body)
        return parsed.get("message") or parsed.get("code")
    except (ValueError, AttributeError):
        return None


def fetch(url, key, timeout):
    request = urllib.request.Request(url, headers={"X-Api-Key": key, "User-Agent": "ironclaw-news/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_BODY)
    except urllib.error.HTTPError as e:
        detail = upstream_message(e.read(MAX_BODY))
        suffix = f": {detail}" if detail else ""
        if e.code in (401, 403):
            raise Failure("error", f"{SERVICE} rejected the API key (HTTP {e.code}){suffix}")
        if e.code == 429:
            raise Failure("error", f"{SERVICE} rate limit exceeded (HTTP 429), retry later{suffix}")
        if e.code == 400:
            raise Failure("invalid_input", f"{SERVICE} refused the request (HTTP 400){suffix}")
        if e.code >= 500:
            raise Failure("error", f"{SERVICE} is failing (HTTP {e.code}){suffix}")
        raise Failure("error", f"{SERVICE} answered HTTP {e.code}{suffix}")
    except (socket.timeout, TimeoutError):
        raise Failure("error", f"{SERVICE} did not answer in time")
    except urllib.error.URLError as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise Failure("error", f"{SERVICE} did not answer in time")
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise Failure("error", f"cannot reach {SERVICE}: {CERTIFICATE_REFUSED} ({reason})")
        raise Failure("error", f"cannot reach {SERVICE}: {reason}")
    try:
        data = json.loads(body)
    except ValueError as e:
        raise Failure("error", f"{SERVICE} sent a malformed response: not JSON ({e})")
    if not isinstance(data, dict) or data.get("status") != "ok" or not isinstance(data.get("articles"), list):
        raise Failure("error", f"{SERVICE} sent a malformed response: {upstream_message(body) or 'no articles'}")
    return data


def execute(params, config):
    key = os.environ.get("NEWSAPI_KEY")
    if not key:
        raise Failure("error", "the secret NEWSAPI_KEY was not provided to this plugin")
    base = str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    timeout = float(config.get("timeout_s") or 10)
    endpoint = params.get("endpoint", "top_headlines")
    query = {"pageSize": str(params.get("page_size", 10))}
    if params.get("query"):
        query["q"] = params["query"]
    if endpoint == "everything":
        if "q" not in query:
            raise Failure("invalid_input", "'everything' needs a 'query'")
        for ours, theirs in (("language", "language"), ("sort_by", "sortBy")):
            if params.get(ours):
                query[theirs] = params[ours]
        path = "everything"
    else:
        for name in ("country", "category"):
            if params.get(name):
                query[name] = params[name]
        if not ({"q", "country", "category"} & query.keys()):
            query["country"] = "us"
        path = "top-headlines"
    data = fetch(f"{base}/{path}?{urllib.parse.urlencode(query)}", key, timeout)
    articles = [
        {
            "title": a.get("title"),
            "source": (a.get("source") or {}).get("name"),
            "author": a.get("author"),
            "url": a.get("url"),
            "description": a.get("description"),
            "published_at": a.get("publishedAt"),
        }
        for a in data["articles"]
        if isinstance(a, dict)
    ]
    return {"endpoint": endpoint, "total_results": data.get("totalResults"), "articles": articles}


def main():
    try:
        request = json.loads(sys.stdin.read())
        params, config = request.get("parameters") or {}, request.get("config") or {}
        if request.get("operation") == "validate":
            response = {"status": "success", "data": None}
        else:
            response = {"status": "success", "data": execute(params, config)}
    except Failure as f:
        response = {"status": f.status, "error": str(f)}
    except (ValueError, AttributeError) as e:
        response = {"status": "error", "error": f"malformed request: {e}"}
    sys.stdout.write(json.dumps(response))


if __name__ == "__main__":
    main()
