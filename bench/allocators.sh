#!/usr/bin/env bash
# Paired allocator comparison (issue #13): the same `fleet bench job` under tcmalloc (auto), glibc with the project's
# GLIBC_TUNABLES (system) and glibc's defaults (system-untuned), in interleaved rounds, so each round's ratios come
# from one stretch of machine time. Prints per round: wall and CPU s/text of the warm mixed-length job, and peak RSS.
#   ROUNDS=3 ARGS="--layers 12 --texts 33 --lengths 115-129" bench/allocators.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ARGS=${ARGS:---layers 12 --texts 33 --lengths 115-129}
FLEET=${FLEET:-src/Cli/bin/Release/net10.0/fleet}
[ -x "$FLEET" ] || dotnet build src/Cli -c Release -nologo -v q >/dev/null
printf '%-6s %-15s %10s %12s %10s\n' round allocator "s/text" "cpu s/text" "peak MiB"
for round in $(seq "$ROUNDS"); do
  for alloc in auto system system-untuned; do
    # shellcheck disable=SC2086
    out=$(FLEET_NATIVE_ALLOCATOR=$alloc "$FLEET" bench job $ARGS 2>/dev/null)
    line=$(grep "^mixed lengths, warm cache" <<< "$out")
    read -r wall cpu <<< "$(awk '{print $5, $9}' <<< "$line")"
    peak=$(sed -nE 's/^peak RSS ([0-9]+) MiB.*/\1/p' <<< "$out")
    printf '%-6s %-15s %10s %12s %10s\n' "$round" "$alloc" "$wall" "$cpu" "$peak"
  done
done
