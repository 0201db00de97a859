#!/usr/bin/env bash
# Builds the tern of an older release (tests/compat/releases.txt) from its commit, in a git
# worktree, into build/compat/VERSION/tern (kept: a later call with the same commit reuses it).
# Usage: tests/compat/build.sh VERSION...
set -euo pipefail
cd "$(dirname "$0")/../.."
for version in "$@"; do
    commit=$(awk -v v="$version" '$1 == v {print $2}' tests/compat/releases.txt)
    [ -n "$commit" ] || { echo "compat: no release $version in tests/compat/releases.txt" >&2; exit 1; }
    out=build/compat/$version
    if [ -x "$out/tern" ] && [ "$(cat "$out/commit" 2>/dev/null)" = "$commit" ]; then
        continue
    fi
    if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
        echo "compat: commit $commit (release $version) is not in this clone; a shallow clone? fetch the full history" >&2
        exit 1
    fi
    src=$PWD/build/compat/src-$version
    rm -rf "$out" "$src"
    git worktree prune
    git worktree add -q --detach "$src" "$commit"
    echo "compat: building tern $version ($(git log -1 --format='%h %ad' --date=short "$commit"))"
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTERN_TESTS=OFF \
        -DTERN_GUESTS=OFF >/dev/null
    cmake --build "$src/build" -j "$(nproc)" --target tern >/dev/null
    mkdir -p "$out"
    cp "$src/build/tern" "$out/tern"
    echo "$commit" >"$out/commit"
    git worktree remove --force "$src"
done
