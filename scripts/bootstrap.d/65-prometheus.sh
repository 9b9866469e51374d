# Staged rollouts (issue 12): Debian's Prometheus server, which the Prometheus health-gate
# tests start as their own process (temp config and data dir, a free port) scraping a test
# exporter. Only the binary is used: the package's own service is neither needed nor started
# by fos1. Sourced by scripts/bootstrap.sh with `say`, `as_root` and `apt_install`.
if ! command -v prometheus >/dev/null 2>&1; then
  say "installing prometheus (the server, for the Prometheus gate tests)"
  apt_install prometheus
fi
