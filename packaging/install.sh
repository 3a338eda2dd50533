#!/usr/bin/env bash
# Builds the release library and installs it for C and C++ consumers:
#   packaging/install.sh /usr/local
# -> PREFIX/lib/libdiagprec.{a,so}, PREFIX/include/diagprec.{h,hpp},
#    PREFIX/lib/pkgconfig/diagprec.pc, PREFIX/lib/cmake/diagprec/diagprecConfig.cmake
set -euo pipefail
prefix=${1:?usage: packaging/install.sh PREFIX}
cd "$(dirname "$0")/.."
cargo build --release --lib
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
install -d "$prefix/lib/pkgconfig" "$prefix/lib/cmake/diagprec" "$prefix/include"
install -m 644 target/release/libdiagprec.a "$prefix/lib/"
install -m 755 target/release/libdiagprec.so "$prefix/lib/"
install -m 644 include/diagprec.h include/diagprec.hpp "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" packaging/diagprec.pc.in \
    > "$prefix/lib/pkgconfig/diagprec.pc"
install -m 644 packaging/diagprecConfig.cmake "$prefix/lib/cmake/diagprec/"
echo "installed diagprec $version under $prefix"
