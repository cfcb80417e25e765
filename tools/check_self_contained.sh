#!/usr/bin/env bash
# A clone must test itself with nothing beside it: no tracked file may read or name a
# path outside the repository (a sibling folder such as a design or vectors checkout that
# a user's clone never has). Test vectors live in tests/vectors/ with their licences.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

# Parent-directory escapes to a sibling folder ("../shared", "../../../vectors") and the
# names of the folders that sat beside the repository while it was built.
# Also a path built from parts: `... / "shared" / ...` (pathlib) or `"shared", "vectors"`.
pattern='\.\./+(shared|vectors|design|mission)\b|(^|[^A-Za-z0-9_.-])shared/(vectors|design|mission|hooks)\b'
pattern+='|/ *["'"'"']shared["'"'"']|["'"'"']shared["'"'"'] *[,/] *["'"'"'](vectors|design|mission)'
if hits=$(git grep --untracked -n -I -E "$pattern" -- . ':!tools/check_self_contained.sh'); then
    echo "These tracked files name a path outside the repository:" >&2
    echo "$hits" >&2
    echo "Copy what they need into the repository (tests/vectors/ for test vectors)." >&2
    exit 1
fi
echo "self-contained: no tracked file names a path outside the repository"
