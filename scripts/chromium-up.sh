#!/usr/bin/env bash
# Installs Debian's chromium (and a font) for the headless screenshot test of the report
# (tests/report/test_report.py: test_report_renders_in_headless_chromium), which skips without it.
# Safe to run again; must run as root.
set -euo pipefail
command -v chromium >/dev/null && exit 0
[ "$(id -u)" -eq 0 ] || { echo "chromium-up: must run as root (it installs packages)" >&2; exit 1; }
log=/tmp/chromium-up-apt.log
{ DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
} >"$log" 2>&1 || { echo "chromium-up: apt-get could not install chromium (see $log)" >&2; exit 1; }
