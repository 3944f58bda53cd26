#!/usr/bin/env sh
# Registers the server with Claude Code; the API key is read from your shell's environment.
claude mcp add threecx \
  -e THREECX_URL="$THREECX_URL" \
  -e THREECX_CLIENT_ID="$THREECX_CLIENT_ID" \
  -e THREECX_CLIENT_SECRET="$THREECX_CLIENT_SECRET" \
  -- threecx-mcp
