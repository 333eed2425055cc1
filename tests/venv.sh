#!/bin/bash
# Makes sure target/venv (a Python venv of the repo's own) has each requirement given, e.g.
# `tests/venv.sh mcp==2.3.0`, installing from PyPI what is missing. Test binaries run in
# parallel and share the venv: a lock keeps two installs from interleaving.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/venv
mkdir -p target
exec 9> target/venv.lock
flock 9
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
missing=()
for requirement in "$@"; do
    name=${requirement%%==*}
    version=${requirement#*==}
    installed=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    [ "$installed" = "$version" ] || missing+=("$requirement")
done
if [ ${#missing[@]} -gt 0 ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${missing[@]}"
fi
