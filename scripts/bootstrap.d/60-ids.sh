# IDS/DPI ingestion (issue 6): nDPI's ndpiReader (Debian's libndpi-bin, nDPI 4.2), which the
# ingest worker runs over a capture or a live interface and the nDPI tests run over the
# shared captures. Sourced by scripts/bootstrap.sh with `say`, `as_root` and `apt_install`.
if ! command -v ndpiReader >/dev/null 2>&1; then
  say "installing libndpi-bin (ndpiReader, nDPI 4.2)"
  apt_install libndpi-bin
fi
