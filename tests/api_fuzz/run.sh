#!/bin/bash
# Runs schemathesis (from PyPI, into target/venv) against a live daemon: the repo's plugins and
# policies, TCP on loopback with an admin token, state in a temporary directory. Every check
# must pass: no 5xx, every status code and body as the OpenAPI document says, and the daemon
# alive at the end. One worker: CPython 3.11.7 parses ASTs unsafely across threads (gh-106905),
# which breaks hypothesis inside schemathesis. Usage: tests/api_fuzz/run.sh [PROFILE_DIR] (default target/debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN_DIR=${1:-target/debug}
MAX_EXAMPLES=${API_FUZZ_EXAMPLES:-60}
VENV=target/venv
SCHEMATHESIS_VERSION=4.32.5

tests/venv.sh "schemathesis==$SCHEMATHESIS_VERSION"

work=$(mktemp -d /tmp/ironclaw-api-fuzz-XXXXXX)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

token=api-fuzz-admin-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/tokens.toml" <<TOKENS
schemathesis = { token = "$token", scope = "admin" }
TOKENS
chmod 600 "$work/tokens.toml"
cat > "$work/ironclawd.toml" <<CONFIG
plugins_dir = "$PWD/plugins"
policies_dir = "$PWD/policies"
state_dir = "$work/state"
[api]
socket = "$work/api.sock"
tcp = "127.0.0.1:$port"
tokens_file = "$work/tokens.toml"
[reload]
watch = false
# The shipped plugins' upstreams point at a closed loopback port, which the proxy refuses as a
# private address: no request ever leaves the machine.
[proxy.hosts]
"api.duckduckgo.com" = "127.0.0.1:9"
"html.duckduckgo.com" = "127.0.0.1:9"
"api.openweathermap.org" = "127.0.0.1:9"
"newsapi.org" = "127.0.0.1:9"
CONFIG

"$BIN_DIR/ironclawd" --config "$work/ironclawd.toml" 2> "$work/daemon.log" &
daemon=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    curl -sf "$url/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done

status=0
"$VENV/bin/schemathesis" run "$url/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    --seed 1 \
    --suppress-health-check all \
    2>&1 | tee "$work/schemathesis.log" || status=$?

if ! kill -0 "$daemon" 2>/dev/null; then
    echo "api fuzz: the daemon died during the run" >&2
    tail -n 50 "$work/daemon.log" >&2
    exit 1
fi
if grep -q 'panicked' "$work/daemon.log"; then
    echo "api fuzz: the daemon logged a panic" >&2
    grep -B2 -A10 'panicked' "$work/daemon.log" >&2
    exit 1
fi
# Every check passed means no 5xx (not_a_server_error), no undocumented status code or body.
echo "api fuzz: $(grep -E '[0-9]+ generated' "$work/schemathesis.log" | tr -s ' '); the daemon is alive"
exit $status
