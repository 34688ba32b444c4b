# Sourced by demo.sh and test.sh: `ensure_venv [EXTRA]` creates .venv on the first run and
# installs the project (editable, with EXTRA) only when pyproject.toml changed since the last
# install that included EXTRA: a stamp per extra in .venv holds pyproject.toml's SHA-256.
# Source edits need no reinstall (the install is editable); a failed install writes no stamp.
ensure_venv() {
    local extra=${1:-base} spec=. python=.venv/bin/python
    [ "$extra" = base ] || spec=".[$extra]"
    if [ ! -x "$python" ]; then
        local base=${PYTHON:-$(command -v python3.11 || command -v python3)}
        "$base" -m venv .venv
    fi
    local hash stamp=".venv/.nas-installed-$extra"
    hash=$("$python" -c 'import hashlib, pathlib
print(hashlib.sha256(pathlib.Path("pyproject.toml").read_bytes()).hexdigest())')
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
        return 0
    fi
    echo "installing the project into .venv (${spec}): pyproject.toml is new or changed" >&2
    "$python" -m pip install --quiet --upgrade pip
    "$python" -m pip install --quiet -e "$spec"
    echo "$hash" >"$stamp"
    # the base install is part of any extra's
    [ "$extra" = base ] || echo "$hash" >".venv/.nas-installed-base"
}
