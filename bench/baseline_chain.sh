#!/bin/sh
# The original chain script's algorithm, rewritten from its description for
# the benchmarks: every 5 s ping n-1 with a 4 s timeout; if it fails, ping
# frontend1 with a 4 s timeout and count a miss only if frontend1 answers;
# fail over when the misses exceed 5 (here: take the peer's address).
#
#   baseline_chain.sh PEER_IP WITNESS_IP DEV
#
# Prints "declared <unix ms>" and "holding <unix ms>" when it fails over.
peer=$1; witness=$2; dev=$3
misses=0
now_ms() { date +%s%3N; }
while true; do
    start=$(date +%s)
    if ping -n -q -c1 -W4 "$peer" >/dev/null 2>&1; then
        misses=0
    elif ping -n -q -c1 -W4 "$witness" >/dev/null 2>&1; then
        misses=$((misses + 1))
    fi
    if [ "$misses" -gt 5 ]; then
        echo "declared $(now_ms)"
        ip addr add "$peer/24" dev "$dev"
        echo "holding $(now_ms)"
        exit 0
    fi
    elapsed=$(( $(date +%s) - start ))
    [ "$elapsed" -lt 5 ] && sleep $((5 - elapsed))
done
