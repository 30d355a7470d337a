# Shared by demo/ and bench/: a small chain in network namespaces.
#
#   source tests/support/netns.sh
#   netns_up PREFIX            # frontend1 (w) .1, backend1 (p) .100, backend2 (o) .101
#   netns_node_config DIR ROLE ID   # config, hosts file and user-data in DIR
#   netns_down PREFIX
#
# The bridge lives in its own namespace (PREFIX b), so the host is untouched.

netns_up() {
    local p=$1 spec x ip
    ip netns add "${p}b"
    ip -n "${p}b" link add br0 type bridge
    ip -n "${p}b" link set br0 up
    for spec in w:192.168.21.1 p:192.168.21.100 o:192.168.21.101; do
        x=${spec%%:*}; ip=${spec#*:}
        ip netns add "$p$x"
        ip link add "$p$x" type veth peer name "$p${x}b"
        ip link set "$p$x" netns "$p$x"
        ip link set "$p${x}b" netns "${p}b"
        ip -n "${p}b" link set "$p${x}b" master br0 up
        ip -n "$p$x" addr add "$ip/24" dev "$p$x"
        ip -n "$p$x" link set "$p$x" up
        ip -n "$p$x" link set lo up
    done
    # Unprivileged ICMP for the observer (off by default in new namespaces).
    ip netns exec "${p}o" sysctl -q -w net.ipv4.ping_group_range="0 2147483647"
}

netns_down() {
    local p=$1 x
    for x in o p w b; do ip netns del "$p$x" 2>/dev/null || true; done
}

netns_node_config() {
    local dir=$1 role=$2 id=$3 bin=${CHAINWATCH_BIN:-chainwatch}
    mkdir -p "$dir"
    CHAINWATCH_CONFIG=/dev/null "$bin" hosts > "$dir/hosts"
    printf '#cloud-config\n# chainwatch: role=%s id=%s\n' "$role" "$id" > "$dir/user-data"
    cat > "$dir/chainwatch.toml" <<TOML
[node]
state_dir = "$dir/state"
status_socket = "$dir/status.sock"
hosts_file = "$dir/hosts"
[identity]
user_data_file = "$dir/user-data"
TOML
}
