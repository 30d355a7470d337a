#!/usr/bin/env python3
"""An EC2 API proxy in front of moto: makes EC2 behave like AWS's (slow
stops, per-call latency, eventually consistent reads, request throttling) and
can misbehave, for fence tests and the rig.

  ec2_proxy.py --upstream http://127.0.0.1:PORT [--bind ADDR] [--port 0]
               [--stop-ms N] [--stop-skip-os-ms N]
               [--latency] [--stale-ms MAX] [--throttle] [--seed N]
               [--snapshot-ms N]

Prints "listening on ADDR:PORT" once ready (and nothing else on stdout).

Without any of the flags after --stop-skip-os-ms the proxy behaves as it
always did: no added latency, every read as consistent as moto's, no
throttling (it only reads moto in the background, for /_stale_read's
history, which clients do not see). Each AWS behaviour below is switched on
by its flag.

Slow stops (AWS's behaviour, which moto does not have): with --stop-ms or
--stop-skip-os-ms above 0, a StopInstances is answered at once with the
instances `stopping`, and DescribeInstances keeps reporting them `stopping`
for that many milliseconds: --stop-skip-os-ms when the request has
SkipOsShutdown=true, --stop-ms otherwise (a graceful OS shutdown is tried
first; on a hung instance AWS takes minutes). Only then is the stop applied
in moto, so whatever polls moto directly (the rig's hypervisor) sees the
instance power off at that moment. A second stop of a `stopping` instance
can only shorten its wait.

--latency: every EC2 call waits, before it is forwarded, a delay drawn per
  action class: Describe*/Get*/List*/Search* 100-300 ms (lognormal, median
  160 ms, clipped), every other (mutating) action 100-500 ms (lognormal,
  median 220 ms, clipped). CloudWatch Logs calls get none. See LATENCY.

--stale-ms MAX: eventual consistency. After a write (CreateTags, DeleteTags,
  StopInstances, StartInstances, any other mutating EC2 action that
  succeeded; the proxy's own slow-stop steps too: the instance reported
  `stopping`, the stop applied, the instance reported `stopped`), a filtered
  DescribeInstances (Filter.N.* and no InstanceId.N) keeps showing each
  affected instance as it was before the write for a random 0..MAX ms; a
  DescribeInstances by ID (InstanceId.N) for a random 0..MAX/10 ms. The
  proxy keeps a history of every instance as moto reports it (a full
  DescribeInstances after each write and every --snapshot-ms) and answers
  such reads itself, evaluating the filters tag:<key>, tag-key, instance-id,
  instance-state-name and instance-state-code (any value may use * and ?).
  Other filters, MaxResults/NextToken, DryRun, an ID the history does not
  know yet, and reads with neither filter nor ID go to moto unchanged.

--throttle: AWS's token buckets, one per API action (its bucket sized by
  the action's category), plus the resource buckets of Run/Start/Stop/
  TerminateInstances (one token per instance). A call that finds a bucket
  empty is answered 503 RequestLimitExceeded and does nothing. See BUCKETS.

--seed N: seeds the draws of --latency and --stale-ms (default: random).

--snapshot-ms N: how often the history is refreshed from moto besides after
  each write (default 250 with --stale-ms, else 1000; moto is only polled
  once an EC2 request came through the proxy, with that request's
  credentials).

Modes, set with POST /_mode?m=<mode> (answers 200):

  pass   forward everything (default)
  fail   StopInstances answers 503 Unavailable (the stop never happens)
  hang   StopInstances never answers (the client times out; the stop never
         happens)
  lose   StopInstances is applied, but its reply is lost (the client times
         out), once; then the proxy behaves as in `pass`
  stall  StopInstances goes through, but DescribeInstances reports every
         stopped instance as still `stopping` (a stop that never completes)
  graceful StopInstances is handled as without SkipOsShutdown (the fence
           of chainwatch 0.1.0, for comparison)
  failtags CreateTags answers 503 (the client's own retries fail too)
  denystop StopInstances answers 403 UnauthorizedOperation (IAM denies it)

A StopInstances with DryRun=true is passed to moto untouched (it answers
DryRunOperation and changes nothing) and is not recorded in /_stops; the
modes fail and denystop answer it as they would the stop.

Other endpoints (available whatever the flags):

  GET  /_stops            a JSON object: `stops`, every StopInstances request
                          seen, with its instance IDs, Force and
                          SkipOsShutdown flags and when it came (`at_ms`, ms
                          since the Unix epoch; `throttled: true` when it was
                          refused by throttling), and `logs`, every
                          PutLogEvents CloudWatch Logs acknowledged (`at_ms`,
                          `body`)
  POST /_throttle?secs=N  every EC2 call (not CloudWatch Logs) is answered
                          503 RequestLimitExceeded for N seconds from now
  GET  /_counts           {"since_ms": ..., "by_action": {"DescribeInstances":
                          n, ...}, "throttled": {...}}: every request by its
                          Action (CloudWatch Logs: by its X-Amz-Target), and
                          those refused by throttling, since start or reset
  POST /_counts/reset     start counting again from zero
  POST /_omit?instance=ID the next filtered DescribeInstances answer that
                          would include ID leaves it out (once)
  POST /_stale_read?secs=N the next filtered DescribeInstances is answered
                          from the fleet as it was N seconds ago (once; the
                          history reaches back HISTORY_S seconds)
  GET  /_history?instance=ID the proxy's versions of ID: when each was seen
                          and became visible to filtered and by-ID reads
                          (ms since the Unix epoch; null: from the start),
                          with its state and tags
"""
import argparse
import json
import math
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>Unavailable</Code><Message>The service is unavailable (test proxy)"
    b"</Message></Error></Errors><RequestID>test</RequestID></Response>"
)
DENY_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>UnauthorizedOperation</Code><Message>You are not authorized to "
    b"perform this operation. (test proxy)</Message></Error></Errors>"
    b"<RequestID>test</RequestID></Response>"
)
# EC2 answers RequestLimitExceeded with HTTP 503, as SDK errors quote it:
# "Status Code: 503; Error Code: RequestLimitExceeded"
# (https://github.com/cloudfoundry/bosh-aws-cpi-release/issues/61,
# https://github.com/jclouds/legacy-jclouds/issues/1214). The SDKs (botocore,
# aws-sdk-rust) class the code as a throttling error and retry it.
THROTTLE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
    b"</Message></Error></Errors><RequestID>test</RequestID></Response>"
)
STOPPING = (b"<code>64</code>", b"<name>stopping</name>")
POWER_OFF_S = 0.5

# Per-call latency (--latency): (median ms, sigma of the log, min ms, max ms)
# of a lognormal clipped to [min, max]. A lognormal because service latency
# is skewed: most calls near the median, a tail towards the bound.
#
# Where the figures come from: issue 32 sets the ranges (Describe* about
# 100-300 ms, mutating calls about 100-500 ms). I looked for public per-call
# measurements of the EC2 API and found none with figures for single calls:
# AWS's own pages (throttling, eventual consistency) give no latencies, and
# the reports I found time whole CLI commands: about half a second for one
# aws CLI call in https://github.com/hashicorp/vault/issues/2767 (an upper
# bound: it includes the CLI's start and TLS set-up), seconds for a listing
# of instances in https://github.com/seek-oss/aec/pull/354 (7.3 s unfiltered,
# 2.9 s filtered by EC2, the tool's start included). So the ranges are the
# issue's estimate, under that half second, not a measurement; mutating
# calls get the longer tail because they go through the control plane's
# write path (and StopInstances/StartInstances do more than a tag write).
#
# CloudWatch Logs calls (X-Amz-Target, JSON) get no latency: they are not on
# chainwatch's fence or takeover path (the shipper batches and retries in the
# background), and the benches time the delivery of an event by the
# proxy's record of CloudWatch's acknowledgement (`logs` in /_stops), which an
# unmeasured delay would only shift.
LATENCY = {
    "read": (160.0, 0.30, 100.0, 300.0),
    "write": (220.0, 0.40, 100.0, 500.0),
}
READ_PREFIXES = ("Describe", "Get", "List", "Search")

# Request throttling (--throttle), from AWS's "Request throttling for the
# Amazon EC2 API", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
# ("Request token bucket sizes and refill rates" and "Resource token bucket
# sizes and refill rates"). EC2 keeps a bucket per API action, sized by the
# action's category: (bucket maximum capacity, refill rate in tokens/s).
# Refill is modelled continuously (AWS adds the second's tokens at once).
NON_MUTATING = (100, 20)  # Describe*, List*, Search*, Get* not listed below
# DescribeInstances & co. requested with neither a filter nor pagination
# (MaxResults/NextToken) draw from a smaller bucket of their own. A request
# by InstanceId.N only is neither filtered nor paginated.
UNFILTERED = (50, 10)
UNFILTERED_ACTIONS = {
    "DescribeInstances", "DescribeInstanceStatus", "DescribeNetworkInterfaces",
    "DescribeSecurityGroups", "DescribeSnapshots",
    "DescribeSpotInstanceRequests", "DescribeVolumes",
}
MUTATING = (50, 5)  # every other action (StopInstances, AssociateAddress, ...)
RESOURCE_INTENSIVE = (50, 5)
RESOURCE_INTENSIVE_ACTIONS = {
    "AcceptVpcPeeringConnection", "AuthorizeSecurityGroupIngress",
    "CancelSpotInstanceRequests", "CreateKeyPair", "CreateVpcPeeringConnection",
    "DeleteVpcPeeringConnection", "RejectVpcPeeringConnection",
    "RevokeSecurityGroupIngress", "RequestSpotInstances",
}
# "Uncategorized actions" with sizes of their own (those a fleet tool calls).
UNCATEGORIZED = {
    "CreateTags": (100, 10),
    "DeleteTags": (100, 10),
    "RunInstances": (5, 2),
    "StartInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "CreateNetworkInterface": (100, 5),
    "DeleteNetworkInterface": (100, 5),
    "CreateSnapshot": (100, 5),
    "CreateVolume": (100, 5),
    "DeleteVolume": (100, 5),
    "ModifyNetworkInterfaceAttribute": (100, 5),
}
# Resource buckets: one token per instance the call acts on.
RESOURCE_BUCKETS = {
    "RunInstances": (1000, 2),
    "TerminateInstances": (1000, 20),
    "StartInstances": (1000, 2),
    "StopInstances": (1000, 20),
}

# How far back the history reaches (/_stale_read needs ~30 s).
HISTORY_S = 60.0

# Eventual consistency (--stale-ms): AWS says the EC2 API is eventually
# consistent, that a command's effect may not be visible at once to the
# commands that follow, and gives no figure
# (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html),
# so MAX is the caller's. Reads by ID see a write within a tenth of it
# (ID_STALE_FRACTION): a read by ID fetches the instance's own record, while
# a filtered read (by tag, by state) is a query over what is indexed from
# those records, which can only catch up after the record itself changed.
# A modelling choice, not a published figure: it makes chainwatch's fleet
# listings (filtered) the reads that lag, and its stop waits (by ID) the
# ones that follow the truth closely.
ID_STALE_FRACTION = 0.1


CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
         "stopping": 64, "stopped": 80}


def stop_reply(ids, before):
    def item(i):
        prev = before.get(i, "running")
        cur = "stopping" if prev in ("running", "pending", "stopping") else prev
        return (
            b"<item><instanceId>%s</instanceId>"
            b"<currentState><code>%d</code><name>%s</name></currentState>"
            b"<previousState><code>%d</code><name>%s</name></previousState></item>"
            % (i.encode(), CODES.get(cur, 64), cur.encode(), CODES.get(prev, 16), prev.encode())
        )

    items = b"".join(item(i) for i in ids)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<StopInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2013-10-15/">'
        b"<requestId>proxy</requestId><instancesSet>%s</instancesSet>"
        b"</StopInstancesResponse>" % items
    )


def rewrite_stopping(out, ids):
    """Report the instances in `ids` as `stopping` in a DescribeInstances
    answer: in each instance's item, the first instanceState after its
    instanceId."""
    for iid in ids:
        marker = b"<instanceId>%s</instanceId>" % iid.encode()
        start = 0
        while True:
            at = out.find(marker, start)
            if at < 0:
                break
            st = out.find(b"<instanceState>", at)
            end = out.find(b"</instanceState>", st)
            if st < 0 or end < 0:
                break
            block = out[st:end]
            block = re.sub(rb"<code>\d+</code>", STOPPING[0], block, count=1)
            block = re.sub(rb"<name>[a-z-]+</name>", STOPPING[1], block, count=1)
            out = out[:st] + block + out[end:]
            start = at + len(marker)
    return out


def stall_rewrite(out):
    """Mode `stall`: every stopped instance reported still `stopping`."""
    return re.sub(
        rb"<code>80</code>(\s*)<name>stopped</name>",
        rb"<code>64</code>\1<name>stopping</name>",
        out,
    )


# --- DescribeInstances XML, taken apart and put together again -------------

TAG_RE = re.compile(rb"<(/?)([A-Za-z_][\w.:-]*)[^>]*?(/?)>")


def children(xml, start, end):
    """The direct child elements of the content xml[start:end]: (name,
    element start, element end, content start, content end)."""
    out = []
    depth = 0
    cur = None
    for m in TAG_RE.finditer(xml, start, end):
        close, name, empty = m.group(1), m.group(2), m.group(3)
        if close:
            depth -= 1
            if depth == 0 and cur is not None:
                out.append((cur[0], cur[1], m.end(), cur[2], m.start()))
                cur = None
        elif empty:
            if depth == 0:
                out.append((name, m.start(), m.end(), m.end(), m.end()))
        else:
            if depth == 0:
                cur = (name, m.start(), m.end())
            depth += 1
    return out


def child(xml, start, end, name):
    for c in children(xml, start, end):
        if c[0] == name:
            return c
    return None


def parse_describe(xml):
    """A DescribeInstances answer as (xmlns, [(reservation head, reservation
    tail, [instance item, ...])]): each reservation's item content before and
    after its instancesSet, and each instance's <item>...</item> as moto wrote
    it. None if it is not one."""
    root = child(xml, 0, len(xml), b"DescribeInstancesResponse")
    if root is None:
        return None
    m = re.match(rb'<DescribeInstancesResponse[^>]*xmlns="([^"]*)"', xml[root[1]:root[3]])
    xmlns = m.group(1) if m else b"http://ec2.amazonaws.com/doc/2016-11-15/"
    rset = child(xml, root[3], root[4], b"reservationSet")
    reservations = []
    if rset is None:
        return xmlns, reservations
    for r in children(xml, rset[3], rset[4]):
        if r[0] != b"item":
            continue
        iset = child(xml, r[3], r[4], b"instancesSet")
        if iset is None:
            continue
        items = [xml[i[1]:i[2]] for i in children(xml, iset[3], iset[4]) if i[0] == b"item"]
        reservations.append((xml[r[3]:iset[1]], xml[iset[2]:r[4]], items))
    return xmlns, reservations


def build_describe(xmlns, reservations):
    """A DescribeInstances answer from (head, tail, items) reservations."""
    parts = []
    for head, tail, items in reservations:
        if items:
            parts.append(b"<item>%s<instancesSet>%s</instancesSet>%s</item>"
                         % (head, b"".join(items), tail))
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<DescribeInstancesResponse xmlns="%s"><requestId>%s</requestId>'
        b"<reservationSet>%s</reservationSet></DescribeInstancesResponse>"
        % (xmlns, str(uuid.uuid4()).encode(), b"".join(parts))
    )


def item_facts(raw):
    """What the filters look at in an instance's item: ID, state, tags."""
    e = ET.fromstring(raw)
    tags = {}
    for t in e.findall("tagSet/item"):
        tags[t.findtext("key") or ""] = t.findtext("value") or ""
    return {
        "id": e.findtext("instanceId") or "",
        "state": e.findtext("instanceState/name") or "",
        "code": e.findtext("instanceState/code") or "",
        "tags": tags,
    }


def item_id(raw):
    m = re.search(rb"<instanceId>([^<]+)</instanceId>", raw)
    return m.group(1).decode() if m else None


def omit_instances(out, ids):
    """`out` without the instances in `ids`, and which of them it had."""
    parsed = parse_describe(out)
    if parsed is None:
        return out, set()
    xmlns, reservations = parsed
    dropped = set()
    kept = []
    for head, tail, items in reservations:
        keep = []
        for raw in items:
            iid = item_id(raw)
            if iid in ids:
                dropped.add(iid)
            else:
                keep.append(raw)
        kept.append((head, tail, keep))
    if not dropped:
        return out, dropped
    return build_describe(xmlns, kept), dropped


# --- DescribeInstances requests --------------------------------------------

SUPPORTED_FILTERS = ("instance-id", "instance-state-name", "instance-state-code", "tag-key")


def describe_request(body):
    """(instance IDs, filters [(name, [values])], whether the proxy can answer
    it itself): not with pagination, DryRun or a filter it does not know."""
    params = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    ids = {}
    names = {}
    values = {}
    own = True
    for k, v in params.items():
        if k in ("Action", "Version"):
            continue
        m = re.fullmatch(r"InstanceId\.(\d+)", k)
        if m:
            ids[int(m.group(1))] = v[0]
            continue
        m = re.fullmatch(r"Filter\.(\d+)\.Name", k)
        if m:
            names[int(m.group(1))] = v[0]
            continue
        m = re.fullmatch(r"Filter\.(\d+)\.Value\.(\d+)", k)
        if m:
            values.setdefault(int(m.group(1)), {})[int(m.group(2))] = v[0]
            continue
        own = False  # MaxResults, NextToken, DryRun, ...
    filters = []
    for n in sorted(names):
        name = names[n]
        if not (name.startswith("tag:") or name in SUPPORTED_FILTERS):
            own = False
        filters.append((name, [values.get(n, {})[m] for m in sorted(values.get(n, {}))]))
    for n in values:
        if n not in names:
            own = False
    return [ids[n] for n in sorted(ids)], filters, own


def wildcard(pattern, value):
    """EC2's filter value matching: * any run, ? one character, \\ escapes."""
    rx = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            rx.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        rx.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch("".join(rx), value, re.S) is not None


def matches(facts, filters):
    for name, values in filters:
        if name.startswith("tag:"):
            v = facts["tags"].get(name[4:])
            ok = v is not None and any(wildcard(p, v) for p in values)
        elif name == "tag-key":
            ok = any(wildcard(p, k) for p in values for k in facts["tags"])
        elif name == "instance-id":
            ok = any(wildcard(p, facts["id"]) for p in values)
        elif name == "instance-state-name":
            ok = any(wildcard(p, facts["state"]) for p in values)
        elif name == "instance-state-code":
            ok = any(wildcard(p, facts["code"]) for p in values)
        else:
            ok = False
        if not ok:
            return False
    return True


def region_of(headers):
    m = re.search(r"Credential=[^/,]+/\d+/([^/,]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else "us-east-1"


# --- The history of the fleet, for eventual consistency and stale reads ----


class Version:
    __slots__ = ("raw", "facts", "seen", "filter_at", "id_at", "res")

    def __init__(self, raw, facts, seen, filter_at, id_at, res):
        self.raw = raw  # the <item> as moto reported it (`stopping` rewritten); None: gone
        self.facts = facts
        self.seen = seen  # monotonic time it was first seen (-inf: at start)
        self.filter_at = filter_at  # visible to filtered reads from then
        self.id_at = id_at  # visible to reads by ID from then
        self.res = res  # its reservation's key


class Fleet:
    """One region's instances, version by version, as moto reported them."""

    def __init__(self, headers):
        self.headers = headers
        self.snap_lock = threading.Lock()  # one snapshot at a time, in order
        self.ready = False  # a first snapshot was taken
        self.xmlns = b"http://ec2.amazonaws.com/doc/2016-11-15/"
        self.versions = {}  # instance ID -> [Version]
        self.order = []  # instance IDs, in the order first seen
        self.reservations = {}  # reservation key -> (head, tail)
        self.res_order = []

    def visible(self, iid, now, kind):
        """The version of `iid` a read of `kind` sees at `now`: the newest
        one visible by then (`filter`, `id`), or current at `now` (`truth`)."""
        best = None
        for v in self.versions.get(iid, ()):
            at = v.filter_at if kind == "filter" else v.id_at if kind == "id" else v.seen
            if at <= now:
                best = v
        return best

    def answer(self, now, kind, filters, ids=None):
        """A DescribeInstances answer from the versions `kind` sees at `now`."""
        by_res = {}
        for iid in self.order if ids is None else [i for i in self.order if i in ids]:
            v = self.visible(iid, now, kind)
            if v is None or v.raw is None or not matches(v.facts, filters):
                continue
            by_res.setdefault(v.res, []).append(v.raw)
        reservations = [
            self.reservations[k] + (by_res[k],) for k in self.res_order if k in by_res
        ]
        return build_describe(self.xmlns, reservations)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stop-ms", type=int, default=0)
    ap.add_argument("--stop-skip-os-ms", type=int, default=0)
    ap.add_argument("--latency", action="store_true",
                    help="per-call latency, drawn per action class")
    ap.add_argument("--stale-ms", type=int, default=0,
                    help="eventually consistent DescribeInstances: filtered reads "
                    "lag writes by 0..MAX ms, reads by ID by 0..MAX/10 ms")
    ap.add_argument("--throttle", action="store_true",
                    help="AWS's request token buckets (503 RequestLimitExceeded)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--snapshot-ms", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    rng_lock = threading.Lock()
    stale_s = max(args.stale_ms, 0) / 1000.0
    snapshot_s = (args.snapshot_ms if args.snapshot_ms is not None
                  else 250 if stale_s > 0 else 1000) / 1000.0
    state = {"mode": "pass", "stops": [], "logs": [], "throttle_until": 0.0,
             "omit": set(), "stale_read": None}
    counts = {"since": time.time(), "by_action": {}, "throttled": {}}
    # instance ID -> (deadline, request headers, request body, applied at)
    pending = {}
    lock = threading.Lock()
    fleets = {}  # region -> Fleet
    hist_lock = threading.Lock()
    snap_wanted = threading.Event()
    buckets = {}  # key -> [tokens, last refill (monotonic)]
    epoch = time.time() - time.monotonic()

    def forward(path, headers, body):
        req = urllib.request.Request(
            args.upstream + path,
            data=body,
            method="POST",
            headers={
                k: v
                for k, v in headers.items()
                if k.lower() not in ("host", "content-length", "transfer-encoding")
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.getheaders(), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.items(), e.read()

    def states(headers, ids):
        """moto's state of each instance (the truth, before any rewriting)."""
        q = {"Action": "DescribeInstances", "Version": "2016-11-15"}
        for n, iid in enumerate(ids, 1):
            q[f"InstanceId.{n}"] = iid
        try:
            _, _, out = forward("/", headers, urllib.parse.urlencode(q).encode())
        except Exception:
            return {}
        found = {}
        for m in re.finditer(
            rb"<instanceId>(i-[0-9a-f]+)</instanceId>.*?<instanceState>\s*<code>\d+</code>\s*<name>([a-z-]+)</name>",
            out,
            re.S,
        ):
            found.setdefault(m.group(1).decode(), m.group(2).decode())
        return found

    def snapshot(fleet):
        """Read every instance from moto (as the proxy reports it: `stopping`
        rewritten) and record those that changed as new versions, visible
        after a random delay (none at the first snapshot)."""
        with fleet.snap_lock:
            q = b"Action=DescribeInstances&Version=2016-11-15"
            try:
                code, _, out = forward("/", fleet.headers, q)
            except Exception as e:  # moto gone: the test is over
                sys.stderr.write(f"ec2-proxy: snapshot: {e}\n")
                return
            if code != 200:
                return
            with lock:
                stopping = list(pending)
            if stopping:
                out = rewrite_stopping(out, stopping)
            parsed = parse_describe(out)
            if parsed is None:
                return
            xmlns, reservations = parsed
            now = time.monotonic()
            first = not fleet.ready
            seen = set()
            with hist_lock:
                fleet.xmlns = xmlns
                for head, tail, items in reservations:
                    m = re.search(rb"<reservationId>([^<]*)</reservationId>", head)
                    res = m.group(1) if m else head
                    if res not in fleet.reservations:
                        fleet.res_order.append(res)
                    fleet.reservations[res] = (head, tail)
                    for raw in items:
                        iid = item_id(raw)
                        if iid is None:
                            continue
                        seen.add(iid)
                        hist = fleet.versions.setdefault(iid, [])
                        if hist and hist[-1].raw == raw:
                            continue
                        if not hist:
                            fleet.order.append(iid)
                        record(hist, raw, item_facts(raw), res, now, first)
                for iid, hist in fleet.versions.items():
                    if iid not in seen and hist[-1].raw is not None:
                        record(hist, None, None, hist[-1].res, now, first)
                prune(fleet, now)
                fleet.ready = True

    def record(hist, raw, facts, res, now, first):
        if first:
            hist.append(Version(raw, facts, -math.inf, -math.inf, -math.inf, res))
            return
        with rng_lock:
            to_filter = rng.uniform(0, stale_s)
            to_id = rng.uniform(0, stale_s * ID_STALE_FRACTION)
        hist.append(Version(raw, facts, now, now + to_filter, now + to_id, res))

    def prune(fleet, now):
        """Forget versions superseded more than HISTORY_S ago (and stale
        windows ago): the newest older one still answers for that time."""
        horizon = now - max(HISTORY_S, 2 * stale_s + 5)
        for hist in fleet.versions.values():
            while len(hist) > 1 and max(hist[1].seen, hist[1].filter_at, hist[1].id_at) < horizon:
                hist.pop(0)

    def fleet_for(headers, sync_first):
        """The history of the request's region, its credentials kept to poll
        moto with; a first snapshot taken now if `sync_first`."""
        region = region_of(headers)
        with hist_lock:
            fleet = fleets.get(region)
            if fleet is None:
                fleet = fleets[region] = Fleet(dict(headers.items()))
            else:
                fleet.headers = dict(headers.items())
        if not fleet.ready:
            if sync_first:
                snapshot(fleet)
            else:
                snap_wanted.set()
        return fleet

    def after_write(headers):
        """A write went to moto: with --stale-ms, record its effect now (its
        stale window starts from the write); else soon, in the background."""
        if stale_s > 0:
            snapshot(fleet_for(headers, True))
        else:
            fleet_for(headers, False)
            snap_wanted.set()

    def snapshots():
        while True:
            snap_wanted.wait(snapshot_s)
            snap_wanted.clear()
            with hist_lock:
                todo = list(fleets.values())
            for fleet in todo:
                snapshot(fleet)

    threading.Thread(target=snapshots, daemon=True).start()

    def apply_due():
        """Apply the stops whose wait is over, in moto. They are reported
        `stopping` for POWER_OFF_S more: whatever watches moto directly (the
        rig's hypervisor, polling) powers the instance off in that time, so
        `stopped` is never reported for an instance whose processes run."""
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            done = []
            with lock:
                due = [(i, p) for i, p in pending.items() if p[0] <= now and p[3] is None]
                for i, p in list(pending.items()):
                    if p[3] is not None and now - p[3] >= POWER_OFF_S:
                        done.append(p[1])
                        del pending[i]
            for iid, (deadline, headers, body, _) in due:
                stop = urllib.parse.urlencode(
                    {"Action": "StopInstances", "Version": "2016-11-15",
                     "InstanceId.1": iid, "Force": "true"}
                ).encode()
                try:
                    forward("/", headers, stop)
                except Exception as e:  # moto gone: the test is over
                    sys.stderr.write(f"ec2-proxy: applying the stop of {iid}: {e}\n")
                with lock:
                    pending[iid] = (deadline, headers, body, time.monotonic())
                after_write(headers)
            for headers in done:  # now reported `stopped`
                after_write(headers)

    threading.Thread(target=apply_due, daemon=True).start()

    def take_bucket(action, body):
        """With --throttle: take this call's tokens, or say it is throttled."""
        params = urllib.parse.parse_qs(body.decode(errors="replace"))
        keys = []
        if action in UNFILTERED_ACTIONS and not any(
            k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in params
        ):
            keys.append((action + "/unfiltered", UNFILTERED, 1))
        elif action in UNCATEGORIZED:
            keys.append((action, UNCATEGORIZED[action], 1))
        elif action in RESOURCE_INTENSIVE_ACTIONS:
            keys.append((action, RESOURCE_INTENSIVE, 1))
        elif action.startswith(READ_PREFIXES):
            keys.append((action, NON_MUTATING, 1))
        else:
            keys.append((action, MUTATING, 1))
        if action in RESOURCE_BUCKETS:
            if action == "RunInstances":
                n = int(params.get("MaxCount", ["1"])[0] or 1)
            else:
                n = sum(1 for k in params if k.startswith("InstanceId."))
            keys.append((action + "/resources", RESOURCE_BUCKETS[action], max(n, 1)))
        now = time.monotonic()
        with lock:
            for key, (cap, rate), _ in keys:
                b = buckets.setdefault(key, [float(cap), now])
                b[0] = min(float(cap), b[0] + (now - b[1]) * rate)
                b[1] = now
            if any(buckets[key][0] < cost for key, _, cost in keys):
                return False
            for key, _, cost in keys:
                buckets[key][0] -= cost
        return True

    def describe(handler, body, mode):
        """A DescribeInstances: from the history (--stale-ms, /_stale_read)
        or from moto, as before; then /_omit."""
        ids, filters, own = describe_request(body)
        filtered = bool(filters) and not ids
        out = None
        now = time.monotonic()
        if filtered and own:
            with lock:
                secs = state["stale_read"]
                state["stale_read"] = None
            if secs is not None:
                fleet = fleet_for(handler.headers, True)
                if fleet.ready:
                    with hist_lock:
                        out = fleet.answer(now - secs, "truth", filters)
        if out is None and stale_s > 0 and own and (filters or ids):
            fleet = fleet_for(handler.headers, True)
            with hist_lock:
                if not fleet.ready:
                    pass  # moto did not answer the first snapshot: ask it
                elif not ids:
                    out = fleet.answer(now, "filter", filters)
                elif all(
                    (v := fleet.visible(i, now, "id")) is not None and v.raw is not None
                    for i in ids
                ):
                    out = fleet.answer(now, "id", filters, set(ids))
        if out is None:
            code, headers, out = forward(handler.path, handler.headers, body)
            with lock:
                stopping = list(pending)
            if stopping:
                out = rewrite_stopping(out, stopping)
        else:
            code, headers = 200, [("Content-Type", "text/xml;charset=UTF-8")]
        if mode == "stall":
            out = stall_rewrite(out)
        if filtered and code == 200:
            with lock:
                omit = set(state["omit"])
            if omit:
                out, dropped = omit_instances(out, omit)
                with lock:
                    state["omit"] -= dropped
        return code, headers, out

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def reply(self, code, body, headers=()):
            self.send_response(code)
            for k, v in headers:
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, obj):
            self.reply(200, json.dumps(obj).encode(), [("Content-Type", "application/json")])

        def query(self):
            return urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)

        def do_GET(self):
            if self.path.startswith("/_stops"):
                with lock:
                    body = json.dumps({"stops": state["stops"], "logs": state["logs"]}).encode()
                return self.reply(200, body, [("Content-Type", "application/json")])
            if self.path.startswith("/_counts"):
                with lock:
                    return self.send_json({
                        "since_ms": int(counts["since"] * 1000),
                        "by_action": dict(counts["by_action"]),
                        "throttled": dict(counts["throttled"]),
                    })
            if self.path.startswith("/_history"):
                iid = self.query().get("instance", [""])[0]

                def ms(t):
                    return None if t == -math.inf else int((t + epoch) * 1000)

                with hist_lock:
                    out = [
                        {"seen_ms": ms(v.seen), "filter_visible_ms": ms(v.filter_at),
                         "id_visible_ms": ms(v.id_at), "gone": v.raw is None,
                         "state": v.facts["state"] if v.facts else None,
                         "tags": v.facts["tags"] if v.facts else None}
                        for f in fleets.values() for v in f.versions.get(iid, ())
                    ]
                return self.send_json({"versions": out})
            self.reply(404, b"")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/_mode"):
                mode = self.query()["m"][0]
                with lock:
                    state["mode"] = mode
                return self.reply(200, mode.encode())
            if self.path.startswith("/_throttle"):
                secs = float(self.query()["secs"][0])
                with lock:
                    state["throttle_until"] = time.monotonic() + secs
                return self.reply(200, b"")
            if self.path.startswith("/_counts/reset"):
                with lock:
                    counts.update(since=time.time(), by_action={}, throttled={})
                return self.reply(200, b"")
            if self.path.startswith("/_omit"):
                with lock:
                    state["omit"].add(self.query()["instance"][0])
                return self.reply(200, b"")
            if self.path.startswith("/_stale_read"):
                with lock:
                    state["stale_read"] = float(self.query()["secs"][0])
                return self.reply(200, b"")
            params = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = params.get("Action", [""])[0]
            target = self.headers.get("X-Amz-Target", "")
            ec2 = not target
            name = target or action or "?"
            with lock:
                mode = state["mode"]
                counts["by_action"][name] = counts["by_action"].get(name, 0) + 1
                throttled = ec2 and time.monotonic() < state["throttle_until"]
            if ec2 and action:
                # moto is polled with the request's credentials. With
                # --stale-ms, the region's first snapshot is taken before
                # anything is forwarded: it is the state before any write.
                fleet_for(self.headers, stale_s > 0)
            if ec2 and not throttled and args.throttle:
                throttled = not take_bucket(action, body)
            if ec2 and args.latency:
                time.sleep(draw_latency(action) / 1000.0)
            if throttled:
                with lock:
                    counts["throttled"][name] = counts["throttled"].get(name, 0) + 1
                    if action == "StopInstances":
                        state["stops"].append(stop_record(params, mode, True))
                return self.reply(503, THROTTLE_BODY, [("Content-Type", "text/xml")])
            dry_run = params.get("DryRun", ["false"])[0] == "true"
            if action == "StopInstances" and dry_run:
                # A DryRun changes nothing (moto answers DryRunOperation),
                # but the failing modes answer it as they would the stop.
                if mode == "fail":
                    return self.reply(503, FAIL_BODY, [("Content-Type", "text/xml")])
                if mode == "denystop":
                    return self.reply(403, DENY_BODY, [("Content-Type", "text/xml")])
            if action == "StopInstances" and not dry_run:
                ids = [v[0] for k, v in sorted(params.items()) if k.startswith("InstanceId.")]
                skip = params.get("SkipOsShutdown", ["false"])[0] == "true"
                with lock:
                    state["stops"].append(stop_record(params, mode, False))
                if mode == "fail":
                    return self.reply(503, FAIL_BODY, [("Content-Type", "text/xml")])
                if mode == "denystop":
                    return self.reply(403, DENY_BODY, [("Content-Type", "text/xml")])
                if mode == "hang":
                    time.sleep(120)
                    return
                # `graceful`: the old fence, as if SkipOsShutdown were not set.
                wait_ms = args.stop_skip_os_ms if skip and mode != "graceful" else args.stop_ms
                if wait_ms > 0:
                    deadline = time.monotonic() + wait_ms / 1000.0
                    now_states = states(self.headers, ids)
                    with lock:
                        for iid in ids:
                            if now_states.get(iid) not in ("running", "pending", "stopping"):
                                continue
                            old = pending.get(iid)
                            if old is None or (old[3] is None and old[0] > deadline):
                                pending[iid] = (deadline, dict(self.headers.items()), body, None)
                    out = stop_reply(ids, now_states)
                    code, headers = 200, [("Content-Type", "text/xml")]
                else:
                    code, headers, out = forward(self.path, self.headers, body)
                if code == 200:
                    after_write(self.headers)
                if mode == "lose":
                    with lock:
                        state["mode"] = "pass"
                    time.sleep(120)
                    return
                return self.reply(code, out, headers)
            if action == "CreateTags" and mode == "failtags":
                return self.reply(503, FAIL_BODY, [("Content-Type", "text/xml")])
            if ec2 and action == "DescribeInstances":
                code, headers, out = describe(self, body, mode)
                return self.reply(code, out, headers)
            code, headers, out = forward(self.path, self.headers, body)
            if code == 200 and target.endswith(".PutLogEvents"):
                # When CloudWatch Logs acknowledged a batch (benches time
                # the delivery of an event by it).
                with lock:
                    state["logs"].append(
                        {"at_ms": int(time.time() * 1000), "body": body.decode(errors="replace")}
                    )
            if ec2 and code == 200 and action and not action.startswith(READ_PREFIXES):
                after_write(self.headers)
            self.reply(code, out, headers)

    def stop_record(params, mode, throttled):
        ids = [v[0] for k, v in sorted(params.items()) if k.startswith("InstanceId.")]
        rec = {"instances": ids,
               "force": params.get("Force", ["false"])[0] == "true",
               "skip_os_shutdown": params.get("SkipOsShutdown", ["false"])[0] == "true",
               "mode": mode, "at_ms": int(time.time() * 1000)}
        if throttled:
            rec["throttled"] = True
        return rec

    def draw_latency(action):
        median, sigma, lo, hi = LATENCY["read" if action.startswith(READ_PREFIXES) else "write"]
        with rng_lock:
            ms = rng.lognormvariate(math.log(median), sigma)
        return min(max(ms, lo), hi)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    sys.stderr.write(f"ec2-proxy: seed {seed}\n")
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
