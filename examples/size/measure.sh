#!/usr/bin/env bash
# Sizes of a C trainer that calls only dp_adam_step_f32 (examples/size/adam_only.c), linked
# against the release library: dynamically, statically, statically with -Wl,--gc-sections,
# and each stripped. Prints a table (bytes); runs each binary once.
#   examples/size/measure.sh            # uses target/release (builds it first)
#   DIAGPREC_PREFIX=/opt/diagprec examples/size/measure.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -n "${DIAGPREC_PREFIX:-}" ]; then
    inc=$DIAGPREC_PREFIX/include lib=$DIAGPREC_PREFIX/lib
else
    (cd "$root" && cargo build --release --lib -p diagprec)
    inc=$root/include lib=${CARGO_TARGET_DIR:-$root/target}/release
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
src=$here/adam_only.c
cc -O2 -I"$inc" "$src" -L"$lib" -ldiagprec -Wl,-rpath,"$lib" -o "$out/dynamic"
cc -O2 -I"$inc" "$src" "$lib/libdiagprec.a" -lpthread -ldl -lm -o "$out/static"
cc -O2 -ffunction-sections -fdata-sections -I"$inc" "$src" "$lib/libdiagprec.a" \
    -Wl,--gc-sections -lpthread -ldl -lm -o "$out/static_gc"
for b in dynamic static static_gc; do
    strip -o "$out/${b}_stripped" "$out/$b"
done
printf '%-22s %12s %12s\n' binary bytes stripped
for b in dynamic static static_gc; do
    "$out/$b" >/dev/null
    printf '%-22s %12d %12d\n' "$b" "$(stat -c %s "$out/$b")" "$(stat -c %s "$out/${b}_stripped")"
done
printf '%-22s %12d %12s\n' "libdiagprec.so" "$(stat -c %s "$(readlink -f "$lib/libdiagprec.so")")" "-"
printf '%-22s %12d %12s\n' "libdiagprec.a" "$(stat -L -c %s "$lib/libdiagprec.a")" "-"
