#!/usr/bin/env bash
# The L2 lab in one command, as root on Debian or Ubuntu:
#
#   sudo bash e2e/lab/lab.sh          # install what is missing, build, bring the lab up, demo
#   sudo bash e2e/lab/lab.sh down     # remove everything it started (safe to repeat)
#   sudo bash e2e/lab/lab.sh up|demo  # one step at a time
#
# The topology, the processes and what the demo shows are described in
# e2e/src/bin/ferrolb-lab.rs. Nothing touches the host's own network namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
    echo "lab.sh: run as root (it creates network namespaces)" >&2
    exit 1
fi

step=${1:-all}
case "$step" in
    all | up | demo | down) ;;
    *) echo "usage: lab.sh [up|demo|down]" >&2; exit 2 ;;
esac

lab=target/debug/ferrolb-lab
if [ "$step" = down ] && [ -x "$lab" ]; then
    exec "$lab" down
fi

# System packages, only when missing (apt-get update first, as a fresh machine needs).
missing=()
command -v ip >/dev/null || missing+=(iproute2)
[ -x /usr/lib/frr/zebra ] || missing+=(frr)
command -v cc >/dev/null || missing+=(build-essential)
command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] ||
    { [ -n "${SUDO_USER:-}" ] && [ -x "$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo" ]; } ||
    missing+=(curl ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # The packages' own services are not wanted (the lab runs its own zebra in the router
    # namespace): keep them from starting, as .ci/test does.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        rm -f /usr/sbin/policy-rc.d
        exit 1
    }
    rm -f /usr/sbin/policy-rc.d
fi

# Rust (the workspace needs 1.89 or newer; Debian's cargo is older): the invoking user's
# rustup toolchain under sudo, else root's, else rustup is installed.
if [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    [ -n "$user_home" ] && export PATH="$user_home/.cargo/bin:$PATH"
    [ -n "$user_home" ] && [ -z "${RUSTUP_HOME:-}" ] && [ -d "$user_home/.rustup" ] &&
        export RUSTUP_HOME="$user_home/.rustup"
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    echo "Installing Rust with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

echo "Building ferrolb-speaker, ferrolb-lab, ferrolb-lab-echo"
cargo build -q -p ferrolb-speaker --bin ferrolb-speaker
cargo build -q -p ferrolb-e2e --bin ferrolb-lab --bin ferrolb-lab-echo

case "$step" in
    all) "$lab" up && "$lab" demo ;;
    *) exec "$lab" "$step" ;;
esac
