#!/usr/bin/env bash
# Prints the path of a Python 3.12 or newer (Django 6 needs it), found as a user has one:
# $PYTHON if set, else the newest python3.X on the PATH, else python3, else a version that
# pyenv manages (its shims on the PATH answer only for the versions selected). Exits 1, saying
# what it looked for, when there is none.
set -uo pipefail

new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

for candidate in ${PYTHON:-} python3.14 python3.13 python3.12 python3; do
    if new_enough "$candidate"; then
        "$candidate" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
if command -v pyenv >/dev/null; then
    for version in $(pyenv versions --bare 2>/dev/null | sort -rV); do
        candidate=$(PYENV_VERSION=$version pyenv which python 2>/dev/null) || continue
        if new_enough "$candidate"; then
            echo "$candidate"
            exit 0
        fi
    done
fi
echo "No Python 3.12 or newer found (tried \$PYTHON, python3.14 … python3.12, python3 and pyenv);" \
    "install one, or set PYTHON to its path." >&2
exit 1
