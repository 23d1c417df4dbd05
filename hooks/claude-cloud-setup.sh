#!/bin/sh
# Claude Code cloud environment: setup script (runs once as root; its file
# system is cached for later sessions, its processes are not). Paste it into
# the environment's "Setup script", or call it from there.
#
# It installs podstack and what its stack needs, makes every image once
# (`podstack prepare`), so the SessionStart hook (.claude/settings.json,
# see claude-settings.json beside this file) neither installs, builds nor
# pulls anything: it writes the exports and starts the stack.
set -eu
cd "${CLAUDE_PROJECT_DIR:-$(pwd)}"

# podstack itself, from this checkout (a static binary in /usr/local/bin).
if ! command -v podstack >/dev/null 2>&1; then
    sh install.sh --prefix /usr/local
fi

# An engine: Docker when it is installed (these VMs ship dockerd, not
# started: `podstack prepare` starts it as root); else podman.
if ! command -v docker >/dev/null 2>&1 && ! command -v podman >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q podman runc uidmap slirp4netns
fi

# Configure the engine and make every image of podstack.toml, once.
podstack prepare
