#!/usr/bin/env bash
# Builds the release library and installs it for C and C++ consumers:
#   packaging/install.sh /usr/local
# -> PREFIX/lib/libdiagprec.so.1.0.0 (SONAME libdiagprec.so.1, 1 = DP_ABI_VERSION, the C ABI's
#      major), the symlinks libdiagprec.so.1 and libdiagprec.so, and libdiagprec.a;
#    PREFIX/include/diagprec.{h,hpp};
#    PREFIX/lib/pkgconfig/diagprec.pc (relocatable: paths relative to ${pcfiledir});
#    PREFIX/lib/cmake/diagprec/diagprec{Config,ConfigVersion}.cmake (relocatable; version = the
#      crate's version, compatible within the same major version).
# The installed tree holds no absolute path: the prefix may be moved or packaged.
# DIAGPREC_SKIP_BUILD=1 installs what the release directory already holds.
set -euo pipefail
prefix=${1:?usage: packaging/install.sh PREFIX}
cd "$(dirname "$0")/.."
if [ "${DIAGPREC_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --lib -p diagprec
fi
# cargo's output directory (CARGO_TARGET_DIR when set, else target/).
release=${CARGO_TARGET_DIR:-target}/release
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
abi=$(sed -n 's/^#define DP_ABI_VERSION \([0-9]*\).*/\1/p' include/diagprec.h)
[ -n "$abi" ] || { echo "install.sh: DP_ABI_VERSION not found in include/diagprec.h" >&2; exit 1; }
soname=libdiagprec.so.$abi
real=$soname.0.0
if command -v readelf >/dev/null; then
    got=$(readelf -d "$release/libdiagprec.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
    if [ "$got" != "$soname" ]; then
        echo "install.sh: $release/libdiagprec.so has SONAME '$got', expected $soname (build.rs)" >&2
        exit 1
    fi
fi
install -d "$prefix/lib/pkgconfig" "$prefix/lib/cmake/diagprec" "$prefix/include"
install -m 644 "$release/libdiagprec.a" "$prefix/lib/"
install -m 755 "$release/libdiagprec.so" "$prefix/lib/$real"
ln -sfn "$real" "$prefix/lib/$soname"
ln -sfn "$soname" "$prefix/lib/libdiagprec.so"
install -m 644 include/diagprec.h include/diagprec.hpp "$prefix/include/"
sed -e "s|@VERSION@|$version|" packaging/diagprec.pc.in > "$prefix/lib/pkgconfig/diagprec.pc"
sed -e "s|@SONAME@|$soname|" -e "s|@REAL@|$real|" packaging/diagprecConfig.cmake \
    > "$prefix/lib/cmake/diagprec/diagprecConfig.cmake"
sed -e "s|@VERSION@|$version|" packaging/diagprecConfigVersion.cmake.in \
    > "$prefix/lib/cmake/diagprec/diagprecConfigVersion.cmake"
echo "installed diagprec $version (C ABI $abi, $real) under $prefix"
