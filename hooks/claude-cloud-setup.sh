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

# podstack itself: a static binary in /usr/local/bin, built from a podstack
# checkout (PODSTACK_SRC, default ./podstack: a submodule or a copy) with
# cargo from crates.io.
if ! command -v podstack >/dev/null 2>&1; then
    src=${PODSTACK_SRC:-./podstack}
    if [ ! -f "$src/install.sh" ]; then
        echo "claude-cloud-setup: no podstack on PATH and no checkout at $src (set PODSTACK_SRC)" >&2
        exit 1
    fi
    sh "$src/install.sh" --prefix /usr/local
fi

# An engine: Docker when it is installed (these VMs ship dockerd, not
# started: `podstack prepare` starts it as root); else podman.
if ! command -v docker >/dev/null 2>&1 && ! command -v podman >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q podman runc uidmap slirp4netns
fi

# Configure the engine and make every image of podstack.toml, once.
podstack prepare
