#!/usr/bin/env bash
# Per-round miss rate of `chainwatch run --observe` (backend2 watching
# backend1, witness frontend1) with 20 % random loss on input and output of
# backend1's namespace (nftables numgen random), over SECONDS (default 60).
#
#   sudo bench/loss_miss_rate.sh [SECONDS]
#
# Uses target/debug/chainwatch; prints rounds, missed rounds, declarations.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CHAINWATCH_BIN=$root/target/debug/chainwatch
source $root/tests/support/netns.sh
p=cwq$$
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null; netns_down $p; rm -rf $work' EXIT
netns_up $p
netns_node_config $work backend 2
ip netns exec ${p}p nft -f - <<'NFT'
table inet cwloss {
  chain input { type filter hook input priority 0; numgen random mod 100 < 20 drop; }
  chain output { type filter hook output priority 0; numgen random mod 100 < 20 drop; }
}
NFT
ip netns exec ${p}o $CHAINWATCH_BIN --config $work/chainwatch.toml --log-format json run --observe 2>$work/log &
pid=$!
sleep ${1:-60}
rounds=$($CHAINWATCH_BIN --config $work/chainwatch.toml status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rounds"])')
misses=$(grep -c 'silent while' $work/log || true)
dead=$(grep -c 'declared dead' $work/log || true)
echo "rounds=$rounds misses=$misses declared=$dead"
grep -o '"misses":[0-9]*' $work/log | sort | uniq -c
