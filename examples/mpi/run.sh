#!/usr/bin/env bash
# Builds examples/mpi/zero1.c (ZeRO-1 sharded Adam with diagprec over MPI), runs it at 1, 2 and
# 4 ranks (oversubscribed on a small machine), and exits non-zero unless every run matches one
# process's dp_adam_step_clipped_multi_f32 bit for bit and the three runs' parameters are
# bitwise equal.
#   examples/mpi/run.sh                          # builds the release library in target/release
#   DIAGPREC_PREFIX=/opt/diagprec examples/mpi/run.sh   # uses an installed package
# Installs Open MPI from the distribution's packages when mpicc or mpirun is missing.
# Threads: each rank runs DIAGPREC_NUM_THREADS=1 pool threads (set below), so 4 ranks on 2
# cores do not multiply threads; with R ranks per host of C cores, use C / R.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

if [ -n "${DIAGPREC_PREFIX:-}" ]; then
    inc=$DIAGPREC_PREFIX/include
    lib=$DIAGPREC_PREFIX/lib
else
    (cd "$root" && cargo build --release --lib -p diagprec)
    inc=$root/include
    lib=${CARGO_TARGET_DIR:-$root/target}/release
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpicc -std=c11 -O2 -Wall -Wextra -Werror -I"$inc" "$here/zero1.c" -o "$out/zero1" \
    -L"$lib" -ldiagprec -Wl,-rpath,"$lib" -lm

# Open MPI refuses root unless asked; CI runs as root. Shared memory between ranks only.
export OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1
for n in 1 2 4; do
    mpirun --oversubscribe --allow-run-as-root -np "$n" -x DIAGPREC_NUM_THREADS=1 \
        "$out/zero1" "$out/params_$n.bin"
done
for n in 2 4; do
    if ! cmp -s "$out/params_1.bin" "$out/params_$n.bin"; then
        echo "parameters after $n ranks differ from 1 rank" >&2
        exit 1
    fi
done
echo "mpi: parameters bitwise equal for 1, 2 and 4 ranks and to the single-process step"
