#!/usr/bin/env bash
# Scores the shipped systemd units with `systemd-analyze security` (offline:
# the unit files as written, no running systemd needed) and fails when any is
# above 3.0, systemd's "OK" band. Prints each score, so CI's log shows them.
# Installs systemd (Debian package) where systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX="${UNIT_SECURITY_MAX:-3.0}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing systemd (Debian package) for systemd-analyze"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze is still missing after the install step; the unit scores cannot be checked" >&2
  exit 1
fi

failed=0
units=(deploy/systemd/*.service)
[ "${#units[@]}" -gt 0 ] && [ -e "${units[0]}" ] || { echo "no units under deploy/systemd" >&2; exit 1; }
for unit in "${units[@]}"; do
  name="$(basename "$unit")"
  # --offline reads the file from the current directory by its name.
  out="$(cd "$(dirname "$unit")" && systemd-analyze security --offline=yes --no-pager "$name" 2>&1)" || true
  score="$(printf '%s\n' "$out" | sed -n "s/^→ Overall exposure level for $name: \([0-9.]*\) .*/\1/p")"
  if [ -z "$score" ]; then
    printf '%s\n' "$out" >&2
    echo "FAIL $name: no score from systemd-analyze security" >&2
    failed=1
    continue
  fi
  if awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s <= m) }'; then
    echo "ok   $name: exposure $score (at most $MAX)"
  else
    printf '%s\n' "$out" | grep '✗' >&2 || true
    echo "FAIL $name: exposure $score, above $MAX" >&2
    failed=1
  fi
done
exit "$failed"
