#!/usr/bin/env bash
# Idle resident memory of two chainwatch binaries, side by side, in observe
# mode (no rig, no AWS): each run drops the page cache first, so the
# binaries' code pages are read from disk as on a fresh boot (with a warm
# cache the kernel maps cached neighbours of every touched page, and the
# resident code then depends on what else read the file). Root only.
#
#   bench/idle_ab.sh OLD_BINARY NEW_BINARY [RUNS] [SECONDS]
set -euo pipefail
old=$1 new=$2 runs=${3:-3} secs=${4:-12}
dir=$(mktemp -d)
trap 'kill $(cat "$dir"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '127.0.0.1 localhost\n' >"$dir/hosts"
printf '#cloud-config\n# chainwatch: role=frontend id=2\n' >"$dir/ud"
for v in old new; do
    mkdir -p "$dir/$v"
    cat >"$dir/$v/c.toml" <<CONF
[node]
state_dir = "$dir/$v/state"
status_socket = "$dir/$v/status.sock"
hosts_file = "$dir/hosts"
[identity]
user_data_file = "$dir/ud"
[probe]
hub_underlay = "127.0.0.1"
CONF
done
echo "run binary VmRSS_kB RssAnon_kB RssFile_kB"
for i in $(seq "$runs"); do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    for v in old new; do
        bin=$old
        [ "$v" = new ] && bin=$new
        "$bin" --config "$dir/$v/c.toml" run --observe >"$dir/$v/log" 2>&1 &
        echo $! >"$dir/$v/pid"
    done
    sleep "$secs"
    for v in old new; do
        pid=$(cat "$dir/$v/pid")
        awk -v run="$i" -v v="$v" '/^VmRSS|^RssAnon|^RssFile/ {r[$1]=$2} END {print run, v, r["VmRSS:"], r["RssAnon:"], r["RssFile:"]}' "/proc/$pid/status"
        kill "$pid"
    done
    wait 2>/dev/null || true
done
