#!/bin/sh
# Registers threecx-mcp with Claude Code for all your projects (user scope).
#
#   sh claude-mcp-add.sh [/ABSOLUTE/PATH/TO/threecx-mcp]
#
# Without an argument it registers the threecx-mcp found on your PATH, by its absolute path, so
# Claude Code finds it however it was started. THREECX_URL and THREECX_CLIENT_ID are passed on
# from your shell. The API key is not: claude would show it in the process list and store it in
# ~/.claude.json. Put it in a file only you can read and set THREECX_CLIENT_SECRET_FILE to that
# file's path. Settings you leave unset here can come from the .env file in threecx-mcp's user
# configuration folder; `threecx-mcp doctor` shows what it read.
set -eu

server=${1:-$(command -v threecx-mcp || true)}
example="e.g. sh claude-mcp-add.sh \$HOME/threecx-mcp/.venv/bin/threecx-mcp"
if [ -z "$server" ]; then
  echo "threecx-mcp is not on your PATH. Give its absolute path, $example" >&2
  exit 2
fi
case $server in
  /*) ;;
  *)
    echo "$server is not an absolute path, which Claude Code needs to find it. Give the full path, $example" >&2
    exit 2
    ;;
esac
if [ ! -x "$server" ]; then
  echo "$server is not an executable file. Give the path of the installed threecx-mcp, $example" >&2
  exit 2
fi
if [ -n "${THREECX_CLIENT_SECRET:-}" ] && [ -z "${THREECX_CLIENT_SECRET_FILE:-}" ]; then
  echo "THREECX_CLIENT_SECRET is set, but the API key must not go on claude's command line." \
    "Save it in a file only you can read: run (umask 077; cat > \$HOME/.threecx-api-key)," \
    "paste the key, press Ctrl-D, then set THREECX_CLIENT_SECRET_FILE=\$HOME/.threecx-api-key" \
    "and run this again." >&2
  exit 2
fi
case ${THREECX_CLIENT_SECRET_FILE:-/} in
  /*) ;;
  *)
    echo "THREECX_CLIENT_SECRET_FILE must be an absolute path (Claude Code starts the server in" \
      "another folder), e.g. \$HOME/.threecx-api-key." >&2
    exit 2
    ;;
esac

set -- claude mcp add threecx --scope user
for name in THREECX_URL THREECX_CLIENT_ID THREECX_CLIENT_SECRET_FILE; do
  value=$(printenv "$name" || true)
  if [ -n "$value" ]; then
    set -- "$@" -e "$name=$value"
  fi
done
exec "$@" -- "$server"
