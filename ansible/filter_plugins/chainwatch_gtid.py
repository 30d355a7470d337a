# Filters for comparing MariaDB GTID positions, used by failover.yml to pick
# the most advanced surviving replica and to refuse divergent ones.
#
# A MariaDB GTID position is a comma-separated list of
# <domain>-<server_id>-<seqno>, one per replication domain. Position A is at
# least as advanced as B when, for every domain in B, A holds a GTID of that
# domain with a sequence number at least as high. Positions where neither
# covers the other have diverged: some server holds transactions the other
# never saw (errant transactions), and promoting either would lose or fork
# them.

from ansible.errors import AnsibleFilterError


def _parse(pos):
    if pos is None:
        return {}
    text = str(pos).strip()
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        fields = part.strip().split("-")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise AnsibleFilterError("not a MariaDB GTID position: %r" % text)
        domain, _server, seqno = (int(f) for f in fields)
        out[domain] = max(out.get(domain, 0), seqno)
    return out


def gtid_covers(a, b):
    """Whether position `a` holds every transaction position `b` holds."""
    pa, pb = _parse(a), _parse(b)
    return all(pa.get(d, -1) >= n for d, n in pb.items())


def gtid_most_advanced(positions, prefer=None):
    """The host (key of `positions`, host -> GTID position) whose position
    covers every other; `prefer` wins ties. Fails when the positions have
    diverged."""
    if not positions:
        raise AnsibleFilterError("no replica positions to compare")
    hosts = sorted(positions)
    if prefer in positions:
        hosts.remove(prefer)
        hosts.insert(0, prefer)
    for h in hosts:
        if all(gtid_covers(positions[h], positions[o]) for o in hosts):
            return h
    raise AnsibleFilterError(
        "the replicas' GTID positions have diverged (errant transactions): %s; "
        "refusing to promote any of them; compare them with "
        "SELECT @@gtid_current_pos and remove the errant transactions"
        % ", ".join("%s=%s" % (h, positions[h]) for h in sorted(positions))
    )


def _parse_state(state):
    """A gtid_binlog_state: the last GTID of each (domain, server_id) pair
    in a server's binary log."""
    out = {}
    text = "" if state is None else str(state).strip()
    for part in text.split(",") if text else []:
        fields = part.strip().split("-")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise AnsibleFilterError("not a MariaDB GTID state: %r" % text)
        domain, server, seqno = (int(f) for f in fields)
        key = (domain, server)
        out[key] = max(out.get(key, 0), seqno)
    return out


def gtid_errant(state, primary_state):
    """The GTIDs of binlog state `state` (a server about to replicate) that
    the primary, whose binlog state is `primary_state`, never had: for each
    (domain, server_id) the server logged, the primary must have logged the
    same pair at least as far. With gtid_strict_mode, sequence numbers only
    grow, so a higher one is a transaction the primary lacks: replicating
    would fail (error 1236), or fork the data. Sorted "D-S-N" strings."""
    mine, theirs = _parse_state(state), _parse_state(primary_state)
    return sorted(
        "%d-%d-%d" % (d, s, n)
        for (d, s), n in mine.items()
        if theirs.get((d, s), -1) < n
    )


class FilterModule(object):
    def filters(self):
        return {
            "gtid_covers": gtid_covers,
            "gtid_errant": gtid_errant,
            "gtid_most_advanced": gtid_most_advanced,
        }
