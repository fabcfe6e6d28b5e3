#!/usr/bin/env bash
# Installs the competitors from Debian (packages.txt), builds them and
# softgate, then runs compare.py with the arguments given, e.g.
#   bench/compare/run.sh --threads 1,2 --reps 5 --op softmax
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
missing=()
while read -r p; do
  [ -n "$p" ] || continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done < "$root/bench/compare/packages.txt"
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
make -C "$root" -j"$(nproc)" all >/dev/null
make -C "$root/bench/compare" >/dev/null
# Debian's python3 (with python3-torch), not a virtualenv's.
exec /usr/bin/python3 "$root/bench/compare/compare.py" --softgate "$root/build/softgate" \
  --python /usr/bin/python3 "$@"
