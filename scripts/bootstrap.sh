#!/usr/bin/env bash
# Installs everything fos1 needs on a fresh Debian machine, and does nothing (fast) when
# it is all there: Debian packages, npm packages, the Temporal CLI built from the Go module
# proxy at a pinned version (cached outside the work tree), and the bpffs mount.
# Used by `npm start` and `npm test`; safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

# `--core`: only what the embedded dev stack needs (npm start); without it, also every
# per-subsystem step in scripts/bootstrap.d (test tools: kube-apiserver, etcd, ndpiReader, …).
core_only=false
[ "${1:-}" = "--core" ] && core_only=true

TEMPORAL_CLI_VERSION=v1.5.1   # keep in step with scripts/paths.ts
CACHE_DIR="${FOS1_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fos1}"
APT_PACKAGES=(clang llvm libbpf1 libbpf-dev bpftool iproute2 nftables)

say() { printf '[bootstrap] %s\n' "$*" >&2; }
started=$(date +%s)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@"
  else say "need root for: $*"; return 1
  fi
}

# 1. Debian packages.
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. npm packages, reinstalled only when package-lock.json changed.
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.fos1-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  say "installing npm packages"
  # `npm install` (not `npm ci`) because the registry mirror lacks some foreign-platform
  # optional packages (e.g. @swc/core-darwin-arm64), which `npm ci` refuses; with the
  # committed lock file present, install resolves exactly the locked versions.
  npm install --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi

# 3. Temporal CLI (dev server). The SDK's own download needs the internet; we build it.
temporal_bin="$CACHE_DIR/temporal-$TEMPORAL_CLI_VERSION/temporal"
if [ ! -x "$temporal_bin" ]; then
  command -v go >/dev/null || { say "Go is needed to build the Temporal CLI (go install)"; exit 1; }
  say "building Temporal CLI $TEMPORAL_CLI_VERSION from the Go module proxy (first time only, a few minutes)"
  tmp_bin=$(mktemp -d "$CACHE_DIR.build.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE_DIR"; mktemp -d "$CACHE_DIR/build.XXXXXX"; })
  GOBIN="$tmp_bin" GOFLAGS=-mod=mod go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
  mkdir -p "$(dirname "$temporal_bin")"
  mv "$tmp_bin/temporal" "$temporal_bin"   # rename: a half-built binary is never at the final path
  rmdir "$tmp_bin"
fi

# 4. bpffs, where the blocklist maps are pinned.
if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
  say "mounting bpffs at /sys/fs/bpf"
  as_root mount -t bpf bpf /sys/fs/bpf
fi

# 5. Per-subsystem steps (a tool built from the Go module proxy, extra Debian packages, …):
#    each scripts/bootstrap.d/NN-name.sh is run in order, with CACHE_DIR and the helpers
#    `say`, `as_root` and `apt_install PKG…` available. Each must be idempotent and fast
#    when its work is already done.
apt_install() {
  local need=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  [ "${#need[@]}" -eq 0 ] && return 0
  say "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}
export CACHE_DIR
for step in scripts/bootstrap.d/*.sh; do
  [ -e "$step" ] || continue
  $core_only && break
  # shellcheck source=/dev/null
  source "$step"
done

elapsed=$(( $(date +%s) - started ))
[ "$elapsed" -gt 2 ] && say "done in ${elapsed}s"
exit 0
