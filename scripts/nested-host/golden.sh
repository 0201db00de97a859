#!/usr/bin/env bash
# Writes the nested golden snapshots: boots the nested host with tern.golden=1, where the test
# golden-make takes scenarios b, c, d and e as snapshots and dumps them through port 0xE9, and
# decodes them into tests/golden/VERSION-nested-NAME.snap with their `tern inspect` text. Like
# tests/golden/make.sh, run it only for a new stream format version; it never rewrites a file.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^#define MIG_VERSION_MAJOR \([0-9]*\)u$/\1/p' src/migrate/mig_stream.h).$(
    sed -n 's/^#define MIG_VERSION_MINOR \([0-9]*\)u$/\1/p' src/migrate/mig_stream.h)
for n in b c d e; do
    if [ -e "tests/golden/$version-nested-$n.snap" ]; then
        echo "golden.sh: tests/golden/$version-nested-$n.snap exists: golden files are never rewritten" >&2
        exit 1
    fi
done
TERN_NESTED_GOLDEN=1 scripts/nested-host/run.sh golden-make
log=build/nested-host/e9.log
for n in b c d e; do
    file=tests/golden/$version-nested-$n.snap
    sed -n "s/.*GOLDEN-DATA $n \([A-Za-z0-9+/=]*\).*/\1/p" "$log" | base64 -d >"$file"
    want=$(sed -n "s/.*GOLDEN-SIZE $n \([0-9]*\).*/\1/p" "$log")
    got=$(stat -c %s "$file")
    [ "$want" = "$got" ] || { echo "golden.sh: $file: $got bytes, the host wrote $want" >&2; rm -f "$file"; exit 1; }
    build/tern inspect "$file" >"$file.inspect"
    build/tern inspect --json "$file" >"$file.json"
    echo "golden.sh: $file ($got bytes)"
done
