# shellcheck shell=bash
# Sourced by scripts/bootstrap.sh (helpers: say, as_root, apt_install; $CACHE_DIR).
# Builds the Temporal server (`go.temporal.io/server/cmd/server`, the same server the CLI's
# dev server embeds, at the version CLI v1.5.1 depends on) from the Go module proxy. The dev
# server has no TLS; this one runs from a config file, which lets the mTLS test
# (test/integration/temporal-mtls.privileged.test.ts) require client certificates.
# Pinned by the module's own go.sum (`go install pkg@version`), built into a temp dir and
# renamed, so a half-built binary is never at the final path. Fast when present.
# Keep the version in step with TEMPORAL_SERVER_VERSION in scripts/paths.ts.
TEMPORAL_SERVER_VERSION=v1.29.1

temporal_server_dir="$CACHE_DIR/temporal-server-$TEMPORAL_SERVER_VERSION"
if [ ! -x "$temporal_server_dir/temporal-server" ]; then
  command -v go >/dev/null || { say "Go is needed to build the Temporal server"; return 1; }
  say "building Temporal server $TEMPORAL_SERVER_VERSION from the Go module proxy (first time only, several minutes)"
  mkdir -p "$CACHE_DIR"
  temporal_server_tmp=$(mktemp -d "$CACHE_DIR/.build-temporal-server.XXXXXX")
  if ! GOBIN="$temporal_server_tmp" GOFLAGS=-mod=mod nice -n 10 go install -trimpath -ldflags="-s -w" \
      "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION"; then
    rm -rf "$temporal_server_tmp"
    return 1
  fi
  mv "$temporal_server_tmp/server" "$temporal_server_tmp/temporal-server"
  chmod 755 "$temporal_server_tmp"   # mktemp made it private; the binary is for every user
  rm -rf "$temporal_server_dir"
  mv "$temporal_server_tmp" "$temporal_server_dir"
  unset temporal_server_tmp
fi
unset temporal_server_dir TEMPORAL_SERVER_VERSION
