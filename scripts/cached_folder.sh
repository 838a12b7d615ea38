# Sourced by the fixture scripts (scripts/fixtures*): one cached, stamped folder of generated files.
#
#   cached_folder NAME STAMP NOTE GENERATOR
#
# Prints $KILN_CACHE/NAME on stdout (the only thing a fixture script prints there). The folder is reused while
# its .stamp holds STAMP (unless the script was given --force, which sets `force=1`). Otherwise GENERATOR (a
# command or shell function) is run with a new temporary folder as its one argument, its stdout sent to
# stderr; the stamp is written into that folder and the folder renamed into place at the end, so an interrupted
# run never leaves a half-written one. One generator at a time per folder: a second caller waits on
# NAME.lock (where flock exists), then finds the stamp. NOTE says how long generation takes, for the progress
# line on stderr.
cached_folder() {
    local name=$1 stamp=$2 note=$3 generator=$4
    local cache="${KILN_CACHE:-$HOME/.cache/kiln}"
    local dest="$cache/$name"
    if _cached_folder_fresh "$dest" "$stamp"; then
        echo "$name: up to date in $dest" >&2
        echo "$dest"
        return 0
    fi
    mkdir -p "$cache"
    exec 9>"$cache/$name.lock"
    if command -v flock >/dev/null; then
        flock 9
        if _cached_folder_fresh "$dest" "$stamp"; then
            echo "$name: up to date in $dest" >&2
            echo "$dest"
            return 0
        fi
    fi
    local tmp start
    tmp=$(mktemp -d "$cache/$name.tmp.XXXXXX")
    chmod 755 "$tmp"
    # shellcheck disable=SC2064  # the folder's name is fixed now
    trap "rm -rf '$tmp'" EXIT
    echo "$name: generating into $tmp ($note)" >&2
    start=$(date +%s)
    "$generator" "$tmp" >&2
    echo "$stamp" > "$tmp/.stamp"
    rm -rf "$dest.old"
    if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
    mv "$tmp" "$dest"
    trap - EXIT
    rm -rf "$dest.old"
    echo "$name: done in $(( $(date +%s) - start )) s: $dest" >&2
    echo "$dest"
}

_cached_folder_fresh() {
    [ "${force:-0}" = 0 ] && [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]
}
