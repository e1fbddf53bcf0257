#!/usr/bin/env bash
# Checks Cargo.lock against the offline RustSec snapshot. The only advisories allowed are the
# ones a decision record accepts, on a line "Accepted advisory: RUSTSEC-YYYY-NNNN".
set -euo pipefail
cd "$(dirname "$0")/.."

tool=../shared/tools/audit-lock
[ -x "$tool" ] || tool="${AUDIT_LOCK:-}"
if [ -z "$tool" ] || [ ! -e "$tool" ]; then
  echo "audit-lock not found (expected ../shared/tools/audit-lock or AUDIT_LOCK=path)" >&2
  exit 1
fi

allow=()
for id in $(grep -ho 'Accepted advisory: RUSTSEC-[0-9]*-[0-9]*' docs/decisions/*.md | awk '{print $3}' | sort -u); do
  allow+=(--allow "$id")
done

# RUSTSEC-2023-0071 (rsa) is accepted only while rsa is merely listed in Cargo.lock (sqlx's
# optional MySQL driver) and never compiled into anything we build.
if cargo tree --workspace --target all -e normal,build,dev -i rsa 2>/dev/null | grep -q .; then
  echo "rsa is now compiled into the build: RUSTSEC-2023-0071 is no longer a lock-file-only entry" >&2
  exit 1
fi

python3 "$tool" Cargo.lock "${allow[@]}"
