#!/usr/bin/env bash
# Install the library into a temporary prefix and build a consumer with both
# pkg-config and find_package(actstore): the install contract.
set -eu
BIN=${1:?usage: cli_install.sh path/to/actstore}
BUILD_DIR=$(cd "$(dirname "$BIN")/.." && pwd)
# A sanitizer build's library needs its consumers built with the same flags
# (the runtime must come first); tests/CMakeLists.txt passes them.
SAN=${AS_CONSUMER_FLAGS:-}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cmake --install "$BUILD_DIR" --prefix "$TMP/prefix" >/dev/null
cat > "$TMP/consumer.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <actstore/store.h>
int main(void)
{
    as_store *s = NULL;
    char err[128];
    if (as_store_create(NULL, &s, err, sizeof err) != 0) { puts(err); return 1; }
    as_store_phase(s, AS_PHASE_FORWARD);   /* enum as_phase via store.h */
    float x[4] = {1, 2, 3, 4}, y[4] = {0};
    as_tensor t = {x, AS_F32, 1, {4}}, d = {y, AS_F32, 1, {4}};
    as_save_info info = {.kind = AS_KIND_GENERIC, .layer = "demo"};
    as_handle h;
    int rc = as_store_save(s, &info, &t, &h);
    as_store_phase(s, AS_PHASE_BACKWARD);
    if (!rc) rc = as_store_restore(s, h, &d);
    if (!rc) rc = as_store_release(s, h);
    as_store_destroy(s);
    printf("%s %s %d\n", as_version_string(), as_strerror(rc), memcmp(x, y, sizeof x) == 0);
    return rc != 0 || memcmp(x, y, sizeof x) != 0;
}
C
LIBDIR=$(ls -d "$TMP"/prefix/lib*/pkgconfig | head -1)
export PKG_CONFIG_PATH="$LIBDIR"
# docs/api.md's command as it is: no extra flags, and the binary runs from
# another directory without LD_LIBRARY_PATH (the .pc file carries an rpath)
unset LD_LIBRARY_PATH
cc -std=c11 -Wall -Werror $SAN -o "$TMP/c1" "$TMP/consumer.c" $(pkg-config --cflags --libs actstore)
(cd / && "$TMP/c1") | grep -q " success 1" || { echo "FAIL: pkg-config consumer"; echo "0 passed, 1 failed"; exit 1; }
# docs/integration.md's example builds from the installed headers alone
EX_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/example/integration.c"
cc -std=c11 -Wall -Werror $SAN -o "$TMP/ex" "$EX_SRC" $(pkg-config --cflags --libs actstore) -lm
(cd / && "$TMP/ex" --steps 2 --policy "softmax=sotk:16:3") | grep -q '"arena_peak_bytes"' \
  || { echo "FAIL: integration example against the installed package"; echo "1 passed, 1 failed"; exit 1; }
mkdir "$TMP/cm"
cat > "$TMP/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(actstore REQUIRED)
add_executable(c2 ../consumer.c)
target_link_libraries(c2 PRIVATE actstore::actstore)
CM
cmake -S "$TMP/cm" -B "$TMP/cm/b" -DCMAKE_PREFIX_PATH="$TMP/prefix" \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_EXE_LINKER_FLAGS="$SAN" >/dev/null
cmake --build "$TMP/cm/b" >/dev/null
(cd / && "$TMP/cm/b/c2") | grep -q " success 1" || { echo "FAIL: find_package consumer"; echo "1 passed, 1 failed"; exit 1; }
echo "2 passed, 0 failed"
