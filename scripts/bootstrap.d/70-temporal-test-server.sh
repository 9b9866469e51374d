# shellcheck shell=bash
# Sourced by scripts/bootstrap.sh (helpers: say, as_root, apt_install; $CACHE_DIR).
# Temporal's time-skipping test server for the fast workflow tests (test/workflow): the
# Java one from Maven Central (io.temporal:temporal-test-server, main class
# io.temporal.testserver.TestServer), since the SDK's own download needs the internet.
# Maven fetches the jar and its runtime classpath (test/tools/temporal-test-server/pom.xml)
# into $CACHE_DIR/temporal-test-server-<version>/lib via a temp dir and a rename, and a
# wrapper script there runs it; the SDK starts that wrapper as an 'existing-path' server
# (it passes the port as the first argument). Fast when present.
# Keep the version in step with scripts/paths.ts.
TEMPORAL_TEST_SERVER_VERSION=1.38.0

fos1_tts_dir="$CACHE_DIR/temporal-test-server-$TEMPORAL_TEST_SERVER_VERSION"
if [ ! -x "$fos1_tts_dir/temporal-test-server" ]; then
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  say "fetching Temporal test server $TEMPORAL_TEST_SERVER_VERSION from Maven Central (first time only)"
  mkdir -p "$CACHE_DIR"
  fos1_tts_tmp=$(mktemp -d "$CACHE_DIR/.fetch-temporal-test-server.XXXXXX")
  mvn -q -B -Dstyle.color=never -f test/tools/temporal-test-server/pom.xml dependency:copy-dependencies \
    -Dtemporal.test-server.version="$TEMPORAL_TEST_SERVER_VERSION" -DincludeScope=runtime \
    -DoutputDirectory="$fos1_tts_tmp/lib" || { rm -rf "$fos1_tts_tmp"; return 1; }
  # Quick start matters more than peak speed: the SDK gives the server 5 s to answer.
  cat > "$fos1_tts_tmp/temporal-test-server" <<'WRAPPER'
#!/bin/sh
# Temporal's time-skipping test server; usage: temporal-test-server PORT [ARGS...]
here=$(dirname "$0")
exec java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k -Xmx512m -cp "$here/lib/*" io.temporal.testserver.TestServer "$@"
WRAPPER
  chmod 755 "$fos1_tts_tmp" "$fos1_tts_tmp/temporal-test-server"
  rm -rf "$fos1_tts_dir"
  mv "$fos1_tts_tmp" "$fos1_tts_dir"
  unset fos1_tts_tmp
fi
unset fos1_tts_dir
