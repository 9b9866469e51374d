# Audit store (issue 13): Debian's PostgreSQL server, for the PostgreSQL backend's tests.
# Nothing is started here, and nothing runs afterwards: the tests initdb their own cluster in a
# temporary folder on a free port (test/helpers/postgres.ts), as the `postgres` system user the
# package creates. Sourced by scripts/bootstrap.sh with `say`, `as_root` and `apt_install`.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  # Debian's postinst creates and starts a default cluster where it can; stop what it started
  # (the package was not there before, so nobody else uses that cluster) and keep it from
  # starting at boot.
  say "installing postgresql (server binaries for the audit store tests)"
  apt_install postgresql
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
      [ "$status" = online ] && as_root pg_ctlcluster "$version" "$cluster" stop || true
      conf="/etc/postgresql/$version/$cluster/start.conf"
      [ -f "$conf" ] && echo manual | as_root tee "$conf" >/dev/null || true
    done
  fi
fi
