#!/bin/sh
# Install the build in $1 into a temporary prefix, then build and run a consumer
# through find_package(nabla) and through pkg-config.
set -eu
build=$1
src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/nabla.h"
ls "$tmp/prefix"/lib*/libnabla.a "$tmp/prefix"/lib*/libnabla.so >/dev/null
cmake -S "$src" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH=$(echo "$tmp/prefix"/lib*) "$tmp/consumer/consumer"
if command -v pkg-config >/dev/null 2>&1; then
  libdir=$(echo "$tmp/prefix"/lib*)
  PKG_CONFIG_PATH=$libdir/pkgconfig
  export PKG_CONFIG_PATH
  cc -std=c11 "$src/main.c" -o "$tmp/pc" $(pkg-config --cflags --libs nabla) -Wl,-rpath,"$libdir"
  "$tmp/pc"
fi
echo "1 passed, 0 failed"
