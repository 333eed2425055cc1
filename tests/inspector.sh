#!/bin/bash
# Runs the MCP Inspector's CLI (npm @modelcontextprotocol/inspector, installed into
# target/inspector on first use) with the arguments given, e.g.
# `tests/inspector.sh --cli ironclaw mcp --method tools/list`.
set -euo pipefail
VERSION=2.12.0
dir="$(cd "$(dirname "$0")/.." && pwd)/target/inspector"
mkdir -p "$dir"
(
    flock 9
    installed=$(node -p "require('$dir/node_modules/@modelcontextprotocol/inspector/package.json').version" 2>/dev/null || true)
    if [ "$installed" != "$VERSION" ]; then
        npm install --prefix "$dir" --silent --no-audit --no-fund "@modelcontextprotocol/inspector@$VERSION" >&2
    fi
) 9> "$dir.lock"
# The Inspector keeps a catalog under $HOME; give it one of its own.
export HOME="$dir/home"
mkdir -p "$HOME"
exec "$dir/node_modules/.bin/mcp-inspector" "$@"
