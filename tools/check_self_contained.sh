#!/usr/bin/env bash
# A clone must test itself with nothing beside it: no file of the repository may read or
# name a path outside it (a sibling folder such as a design or vectors checkout that a
# user's clone never has). Test vectors live in tests/vectors/ with their licences.
#
# This is a lint, not a proof: the proof is `make test` in a fresh clone with nothing
# beside it, which CI runs. It scans tracked files and those not yet added (so a
# developer hears it before committing), and every tracked symbolic link.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
status=0

# Parent-directory escapes to a sibling folder (two dots and a slash, then "shared",
# "vectors", ...), the names of the folders that sat beside the repository while it was
# built, and a path to them built from parts: `/ "shared"`, `joinpath("shared")`,
# `join("..", "shared")`.
q="[\"']"
pattern='\.\./+(shared|vectors|design|mission)\b'
pattern+="|(^|[[:space:]\"'(=])shared/(vectors|design|mission|hooks)\\b"
pattern+="|/ *${q}shared${q}|joinpath\\( *${q}shared${q}|${q}\\.\\.${q} *, *${q}shared${q}"
pattern+="|${q}shared${q} *[,/] *${q}(vectors|design|mission)"
if hits=$(git grep --untracked -n -I -E "$pattern" -- . ':!tools/check_self_contained.sh'); then
    echo "These files name a path outside the repository:" >&2
    echo "$hits" >&2
    status=1
fi

# A tracked symbolic link that leaves the repository.
root=$(pwd -P)
while IFS= read -r link; do
    target=$(readlink -m -- "$link")
    case "$target" in
        "$root"/*) ;;
        *) echo "$link links outside the repository (to $(readlink -- "$link"))" >&2; status=1 ;;
    esac
done < <(git ls-files -s | awk '$1 == "120000" { sub(/^[^\t]*\t/, ""); print }')

if [ "$status" -ne 0 ]; then
    echo "Copy what they need into the repository (tests/vectors/ for test vectors)." >&2
    exit 1
fi
echo "self-contained: no file names a path outside the repository"
