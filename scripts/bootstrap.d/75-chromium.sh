# The Web UI browser test (issue 15): Debian's Chromium, driven by playwright-core (npm).
# Playwright's own browser download needs the internet and cannot work here, so the test
# launches /usr/bin/chromium headless with a fresh profile. Only the binary is used.
# Sourced by scripts/bootstrap.sh with `say`, `as_root` and `apt_install`; fast when present.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium (the browser for the Web UI test)"
  apt_install chromium
fi
