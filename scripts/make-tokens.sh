#!/usr/bin/env bash
# Makes the random bearer tokens of the Kubernetes install (deploy/kubernetes),
# which `kubectl apply -k deploy/kubernetes` reads and refuses to go without:
#
#   scripts/make-tokens.sh [--force] [DIR]     DIR: deploy/kubernetes/base/secrets
#
#   DIR/tokens.json   the server's --tokens-file (docs/api.md#authentication):
#                     "agents" may only ingest, "people" may only query
#   DIR/agent-token   the agents' token alone (PODFLAME_TOKEN), no newline
#   DIR/query-token   the people's token (web UI, curl, Grafana), no newline
#
# Existing tokens are kept unless --force is given (to rotate them: then apply
# again; the Secrets' names change with their content, so the pods restart).
# The files are readable by their owner only and kept out of git
# (deploy/kubernetes/base/.gitignore).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
force=""
if [ "${1:-}" = "--force" ]; then
    force=1
    shift
fi
dir="${1:-$root/deploy/kubernetes/base/secrets}"

if [ -z "$force" ] && [ -e "$dir/tokens.json" ]; then
    echo "make-tokens: $dir/tokens.json exists; keeping it (--force makes new tokens)" >&2
    exit 0
fi

# 32 random bytes in base64url: 43 characters the tokens file and HTTP headers
# take as they are.
random_token() {
    head -c 32 /dev/urandom | base64 | tr -d '=\n' | tr '+/' '-_'
}

agent="$(random_token)"
query="$(random_token)"
umask 077
mkdir -p "$dir"
printf '%s' "$agent" >"$dir/agent-token"
printf '%s' "$query" >"$dir/query-token"
cat >"$dir/tokens.json" <<JSON
[
  {"name": "agents", "token": "$agent", "scopes": ["ingest"]},
  {"name": "people", "token": "$query", "scopes": ["query"]}
]
JSON
echo "make-tokens: wrote $dir/tokens.json, agent-token and query-token" >&2
echo "make-tokens: the web UI and the API take the query token: $dir/query-token" >&2
