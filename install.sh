#!/bin/sh
# install.sh: build podstack from this checkout and install it.
#
#   sh install.sh [--prefix DIR] [--with-podman] [--run] [--claude-hook [DIR]]
#
# Builds the static release binary with cargo and installs it as
# PREFIX/bin/podstack (PREFIX: $PREFIX, else /usr/local as root, ~/.local
# otherwise). Idempotent: an unchanged binary is not rewritten.
#   --with-podman  install podman, runc, uidmap, slirp4netns, fuse-overlayfs and
#                  catatonit (the pause image of podman kube play, podman run --init)
#                  with apt-get or dnf where they are missing
#   --run          then run podstack's main job: configure podman, check it
#                  with doctor, and run the embedded demo stack (up, status,
#                  a request to its HTTP service, down)
#   --claude-hook [DIR]  merge podstack's SessionStart hook into
#                  DIR/.claude/settings.json (DIR: the current folder), keeping
#                  every other key and hook; run twice, it stays one entry
# Nothing is downloaded except by the package managers (apt-get/dnf, cargo).
set -eu

say() {
    printf 'install.sh: %s\n' "$*" >&2
}

err() {
    say "error: $*"
    exit 1
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || err "'$1' is needed: $2"
}

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        err "installing packages needs root: run as root or install sudo"
    fi
}

# Prints the packages whose command is missing.
missing_packages() {
    for pair in podman:podman runc:runc newuidmap:uidmap slirp4netns:slirp4netns fuse-overlayfs:fuse-overlayfs catatonit:catatonit; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
            printf '%s ' "$pkg"
        fi
    done
}

install_podman() {
    missing=$(missing_packages)
    if [ -z "$missing" ]; then
        say "podman and its helpers are already installed"
        return 0
    fi
    say "installing: $missing"
    if command -v apt-get >/dev/null 2>&1; then
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing ||
            { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing; }
    elif command -v dnf >/dev/null 2>&1; then
        # Fedora ships newuidmap in shadow-utils.
        missing=$(printf '%s' "$missing" | sed 's/uidmap/shadow-utils/')
        # shellcheck disable=SC2086
        as_root dnf install -y $missing
    else
        err "no apt-get or dnf here: install $missing with your package manager"
    fi
}

# Prints the demo web service's answer (curl, else wget, else bash's /dev/tcp).
demo_get() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS http://127.0.0.1:47080/
    elif command -v wget >/dev/null 2>&1; then
        wget -qO- http://127.0.0.1:47080/
    else
        say "no curl or wget here; podstack demo status above shows the probe's answer"
    fi
}

main() {
    with_podman=false
    run=false
    hook_dir=''
    start_dir=$(pwd)
    if [ "$(id -u)" = 0 ]; then
        prefix=${PREFIX:-/usr/local}
    else
        prefix=${PREFIX:-${HOME:?HOME is not set}/.local}
    fi
    while [ $# -gt 0 ]; do
        case $1 in
            --prefix)
                [ $# -ge 2 ] || err "--prefix needs a folder"
                prefix=$2
                shift
                ;;
            --prefix=*) prefix=${1#--prefix=} ;;
            --with-podman) with_podman=true ;;
            --run) run=true ;;
            --claude-hook)
                hook_dir=$start_dir
                if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then
                    hook_dir=$2
                    shift
                fi
                ;;
            --claude-hook=*) hook_dir=${1#--claude-hook=} ;;
            -h | --help)
                usage
                return 0
                ;;
            *) err "unknown option '$1' (see --help)" ;;
        esac
        shift
    done

    here=$(cd "$(dirname "$0")" && pwd)
    cd "$here"
    [ -f Cargo.toml ] || err "run install.sh from a podstack checkout"

    if [ "$with_podman" = true ]; then
        install_podman
    fi

    need_cmd cargo "install Rust (apt-get install cargo, or rustup)"
    say "building the static release binary"
    cargo build --release --locked --quiet
    built="${CARGO_TARGET_DIR:-$here/target}/x86_64-unknown-linux-gnu/release/podstack"
    [ -x "$built" ] || err "cargo did not produce $built"

    dest="$prefix/bin/podstack"
    mkdir -p "$prefix/bin"
    if [ -f "$dest" ] && cmp -s "$built" "$dest"; then
        say "$dest is already up to date"
    else
        # Same-folder copy, then rename: a running podstack is never half-written.
        tmp="$prefix/bin/.podstack.$$"
        cp "$built" "$tmp"
        chmod 0755 "$tmp"
        mv -f "$tmp" "$dest"
        say "installed $dest ($(wc -c <"$dest" | tr -d ' ') bytes)"
    fi
    case ":${PATH:-}:" in
        *":$prefix/bin:"*) ;;
        *) say "note: $prefix/bin is not on PATH; add it, or call $dest" ;;
    esac

    if [ -n "$hook_dir" ]; then
        case $hook_dir in
            /*) ;;
            *) hook_dir="$start_dir/$hook_dir" ;;
        esac
        # A JSON-aware merge (podstack's own): other keys and hooks are kept.
        "$dest" __claude-settings "$hook_dir" --binary "$dest" --timeout 90
    fi

    if [ "$run" = true ]; then
        "$dest" configure
        "$dest" doctor
        "$dest" demo up
        "$dest" demo status
        say "GET http://127.0.0.1:47080/ (the demo's web service):"
        demo_get
        "$dest" demo down
    fi
}

main "$@"
