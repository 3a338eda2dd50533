#!/usr/bin/env bash
# CI: the installed library as a consumer sees it. Installs the release build to a temporary
# prefix, MOVES the prefix, then builds and runs:
#   - packaging/consumer with CMake (find_package(diagprec 0.1 REQUIRED); diagprec::diagprec
#     and diagprec::diagprec_static), and with pkg-config (shared, and --static);
#   - examples/cpp (the C++ training example, CMake, every optimizer: the loss must fall);
#   - examples/mpi/run.sh (ZeRO-1 sharded Adam at 1, 2 and 4 ranks: bitwise equal).
# Checks that consumers record NEEDED libdiagprec.so.<ABI> (the SONAME), not a path.
# Installs cmake, pkg-config and Open MPI from the distribution when missing. Exits non-zero on
# any failure. One release build of the library serves every step.
#   bash .ci/consumers.sh            # all of it
#   SKIP_MPI=1 bash .ci/consumers.sh # without the MPI run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v readelf >/dev/null || need+=(binutils)
command -v c++ >/dev/null || need+=(g++)
if [ "${SKIP_MPI:-0}" != 1 ]; then
    command -v mpicc >/dev/null || need+=(libopenmpi-dev)
    command -v mpirun >/dev/null || need+=(openmpi-bin)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== release build and install to a temporary prefix"
start=$SECONDS
bash packaging/install.sh "$work/staging"
echo "(build and install: $((SECONDS - start)) s)"
mv "$work/staging" "$work/moved"
prefix=$work/moved
abi=$(sed -n 's/^#define DP_ABI_VERSION \([0-9]*\).*/\1/p' "$prefix/include/diagprec.h")
soname=libdiagprec.so.$abi
test -L "$prefix/lib/libdiagprec.so" && test -L "$prefix/lib/$soname" \
    && test -f "$prefix/lib/$soname.0.0" || { echo "missing library files or links" >&2; exit 1; }
if grep -rl "$work/staging" "$prefix" >/dev/null 2>&1; then
    echo "the installed tree names its install prefix: not relocatable" >&2
    grep -rl "$work/staging" "$prefix" >&2
    exit 1
fi
got=$(readelf -d "$prefix/lib/$soname.0.0" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$got" = "$soname" ] || { echo "SONAME '$got', expected $soname" >&2; exit 1; }

# The dynamic section of a consumer must name the SONAME, never the path it was linked from.
check_needed() {
    local exe=$1 needed
    needed=$(readelf -d "$exe" | sed -n 's/.*Shared library: \[\(libdiagprec[^]]*\)\].*/\1/p')
    if [ "$needed" != "$soname" ]; then
        echo "$exe: NEEDED '$needed', expected $soname" >&2
        exit 1
    fi
}
# A static consumer must not need the shared library at all.
check_static() {
    if readelf -d "$1" | grep -q 'Shared library: \[libdiagprec'; then
        echo "$1 links libdiagprec dynamically" >&2
        exit 1
    fi
}

echo "== CMake consumer (find_package(diagprec 0.1 REQUIRED), both targets)"
cmake -S packaging/consumer -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake" >/dev/null
check_needed "$work/cmake/consumer_shared"
check_static "$work/cmake/consumer_static"
"$work/cmake/consumer_shared"
"$work/cmake/consumer_static"

echo "== CMake refuses an incompatible version request"
mkdir -p "$work/v2"
cat > "$work/v2/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(v2 C)
find_package(diagprec 1.0 QUIET)
if(diagprec_FOUND)
  message(FATAL_ERROR "diagprec 1.0 was accepted from a 0.x package")
endif()
find_package(diagprec 0.1.0 EXACT REQUIRED)
CMAKE
cmake -S "$work/v2" -B "$work/v2/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null

echo "== pkg-config consumer (shared, and --static)"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
pkg-config --exists 'diagprec >= 0.1'
cc -O2 packaging/consumer/consumer.c $(pkg-config --cflags --libs diagprec) -lm \
    -o "$work/pc_shared"
cc -O2 packaging/consumer/consumer.c $(pkg-config --cflags diagprec) -Wl,-Bstatic \
    $(pkg-config --libs-only-L diagprec) -ldiagprec -Wl,-Bdynamic \
    $(pkg-config --static --libs-only-l diagprec | sed 's/-ldiagprec//') -lm -o "$work/pc_static"
check_needed "$work/pc_shared"
check_static "$work/pc_static"
# The shared consumer has no rpath: the loader finds the library through LD_LIBRARY_PATH, as
# it would in a system directory.
LD_LIBRARY_PATH=$prefix/lib "$work/pc_shared"
"$work/pc_static"

echo "== C++ training example (examples/cpp against the moved prefix)"
cmake -S examples/cpp -B "$work/cpp" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cpp" >/dev/null
check_needed "$work/cpp/train_mlp"
for opt in adamw soap gn; do
    "$work/cpp/train_mlp" "$opt"
done

if [ "${SKIP_MPI:-0}" != 1 ]; then
    echo "== ZeRO-1 over MPI (examples/mpi/run.sh: 1, 2 and 4 ranks, bitwise equal)"
    DIAGPREC_PREFIX=$prefix bash examples/mpi/run.sh
fi
echo "consumers: all passed ($((SECONDS - start)) s)"
