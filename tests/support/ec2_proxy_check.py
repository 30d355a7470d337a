#!/usr/bin/env python3
"""Checks tests/support/ec2_proxy.py without cargo: starts moto and the proxy
(five of them, with different flags, on free loopback ports) and proves each
behaviour with boto3, with assertions that fail if the behaviour is missing.

  /opt/chainwatch-venv/bin/python tests/support/ec2_proxy_check.py

Prints one line per check and "N passed, M failed"; exits 1 if any failed.
Kills every process it starts.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get("CHAINWATCH_VENV", "/opt/chainwatch-venv")
# EC2_PROXY: check another copy of the proxy (e.g. one with a behaviour removed).
PROXY = os.environ.get("EC2_PROXY") or os.path.join(HERE, "ec2_proxy.py")
# The Rust tests start the proxy with the system's python3.
PYTHON = shutil.which("python3") or sys.executable
AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=0")
STALE_MS = 2000
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    p = subprocess.Popen([os.path.join(VENV, "bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("moto does not listen")
            time.sleep(0.1)
    return f"http://127.0.0.1:{port}"


def start_proxy(upstream, *flags):
    p = subprocess.Popen([PYTHON, PROXY, "--upstream", upstream, "--bind", "127.0.0.1",
                          "--port", "0", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    line = p.stdout.readline().strip()
    assert line.startswith("listening on "), f"proxy said {line!r}"
    return "http://" + line[len("listening on "):]


def client(endpoint, service="ec2"):
    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )


def post(url, data=b""):
    return urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST")).read()


def get_json(url):
    return json.loads(urllib.request.urlopen(url).read())


def raw_ec2(endpoint, body):
    req = urllib.request.Request(endpoint + "/", data=body.encode(), method="POST", headers={
        "Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def instances(resp):
    return [i for r in resp["Reservations"] for i in r["Instances"]]


def by_tag(ec2, key, *values):
    return instances(ec2.describe_instances(Filters=[{"Name": f"tag:{key}", "Values": list(values)}]))


def tags(inst):
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def timed(f, *a, **kw):
    t = time.monotonic()
    out = f(*a, **kw)
    return out, (time.monotonic() - t) * 1000


def error_of(f, *a, **kw):
    """(error code, HTTP status) of a call expected to fail; (None, 200) if it
    did not."""
    try:
        f(*a, **kw)
        return None, 200
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def now_ms():
    return time.time() * 1000


# --- the checks -----------------------------------------------------------

def check_default_pass_through(env):
    """No flags: moto's answer byte for byte, and a tag write visible at once
    to a filtered read."""
    p0 = env["p0"]
    body = "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:group&Filter.1.Value.1=p0"
    assert raw_ec2(p0, body) == raw_ec2(env["moto"], body), "the answer differs from moto's"
    ec2 = client(p0)
    for n in range(3):
        ec2.create_tags(Resources=[env["I0"]], Tags=[{"Key": "chk", "Value": f"v{n}"}])
        seen = [i["InstanceId"] for i in by_tag(ec2, "chk", f"v{n}")]
        assert seen == [env["I0"]], f"write {n} not visible at once to a filtered read: {seen}"


def check_latency(env):
    """--latency: Describe* 100-300 ms, mutating 100-500 ms, logs none."""
    slack = 250  # moto's own time, boto3 and a busy 2-core machine
    ec2 = client(env["p1"])
    reads = [timed(ec2.describe_instances, Filters=[{"Name": "tag:group", "Values": ["p1"]}])[1]
             for _ in range(8)]
    writes = [timed(ec2.create_tags, Resources=[env["I1"]], Tags=[{"Key": "lat", "Value": str(n)}])[1]
              for n in range(8)]
    logs, logs_moto = client(env["p1"], "logs"), client(env["moto"], "logs")
    log_calls = [timed(logs.describe_log_groups)[1] for _ in range(3)]
    log_direct = [timed(logs_moto.describe_log_groups)[1] for _ in range(3)]
    print(f"    describe ms: {[round(x) for x in reads]}")
    print(f"    create_tags ms: {[round(x) for x in writes]}")
    print(f"    logs ms: {[round(x) for x in log_calls]} (moto itself: {[round(x) for x in log_direct]})")
    assert all(100 - 2 <= x <= 300 + slack for x in reads), f"describe outside 100-300 ms: {reads}"
    assert all(100 - 2 <= x <= 500 + slack for x in writes), f"create_tags outside 100-500 ms: {writes}"
    assert max(reads) - min(reads) > 10, "describe latency does not vary"
    assert min(log_calls) < min(log_direct) + 60, f"CloudWatch Logs calls were delayed: {log_calls}"


def check_stale_tags(env):
    """--stale-ms 2000: a CreateTags is invisible to a filtered read right
    after, visible by ID within 0..200 ms and by filter within 0..2000 ms."""
    ec2 = client(env["p2"])
    hidden_right_after = 0
    for n, iid in enumerate(env["I2"]):
        value = f"s{n}"
        t_call = now_ms()
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "stale", "Value": value}])
        t_done = now_ms()
        versions = get_json(f"{env['p2']}/_history?instance={iid}")["versions"]
        assert versions, "the proxy keeps no history of the instance"
        hist = versions[-1]
        assert hist["tags"].get("stale") == value, hist
        # The stale windows start when the proxy saw the write in moto,
        # during the call.
        t_write, f_at, id_at = hist["seen_ms"], hist["filter_visible_ms"], hist["id_visible_ms"]
        assert t_call - 20 <= t_write <= t_done + 20, (t_call, hist, t_done)
        assert f_at - t_write <= STALE_MS + 1 and id_at - t_write <= STALE_MS / 10 + 1, hist
        seen_id = seen_f = None
        first = True
        while seen_f is None or seen_id is None:
            ts = now_ms()
            got = by_tag(ec2, "stale", value)
            te = now_ms()
            if got:
                assert te >= f_at - 20, f"filtered read saw the write {f_at - te:.0f} ms early"
                i = got[0]
                assert i["InstanceId"] == iid and i["State"]["Name"] and i.get("PrivateIpAddress"), i
                assert tags(i).get("fleet") == "chk", i
                seen_f = seen_f or te
            else:
                assert ts <= f_at + 20, f"filtered read still stale {ts - f_at:.0f} ms after its window"
                if first:
                    hidden_right_after += 1
            first = False
            ts = now_ms()
            one = instances(ec2.describe_instances(InstanceIds=[iid]))[0]
            te = now_ms()
            if tags(one).get("stale") == value:
                assert te >= id_at - 20, "read by ID saw the write early"
                seen_id = seen_id or te
            else:
                assert ts <= id_at + 20, "read by ID still stale after its window"
            assert now_ms() - t_write < STALE_MS + 1500, "the write never became visible"
            time.sleep(0.03)
        print(f"    write {n}: by ID after {seen_id - t_write:.0f} ms (window {id_at - t_write:.0f}), "
              f"by filter after {seen_f - t_write:.0f} ms (window {f_at - t_write:.0f})")
        assert seen_id - t_write <= STALE_MS / 10 + 300
        assert seen_f - t_write <= STALE_MS + 300
    assert hidden_right_after >= 1, "no write was ever invisible to the filtered read right after it"


def check_stale_filters(env):
    """The proxy's own filter evaluation (tag with several values and
    wildcards, tag-key, instance-id, instance-state-name) answers what moto
    answers, once every write is visible."""
    ec2p, ec2m = client(env["p2"]), client(env["moto"])
    a, b = env["I2"][0], env["I2"][1]
    # Past every stale window first.
    visible = [v["filter_visible_ms"] or 0
               for i in env["I2"] + [env["I2s"]]
               for v in get_json(f"{env['p2']}/_history?instance={i}")["versions"]]
    time.sleep(max(0, (max(visible) - now_ms()) / 1000 + 0.05))
    cases = [
        [{"Name": "tag:group", "Values": ["p2"]}],
        [{"Name": "tag:group", "Values": ["p2*"]}],
        [{"Name": "tag:group", "Values": ["p?"]}, {"Name": "tag:stale", "Values": ["s0", "s2"]}],
        [{"Name": "tag:group", "Values": ["p2*"]}, {"Name": "tag-key", "Values": ["stale"]}],
        [{"Name": "tag:group", "Values": ["p2*"]}, {"Name": "instance-state-name", "Values": ["running"]}],
        [{"Name": "instance-id", "Values": [a, b]}],
        [{"Name": "tag:group", "Values": ["p2"]}, {"Name": "tag:nothing", "Values": ["*"]}],
    ]
    for f in cases:
        mine = sorted(i["InstanceId"] for i in instances(ec2p.describe_instances(Filters=f)))
        motos = sorted(i["InstanceId"] for i in instances(ec2m.describe_instances(Filters=f)))
        assert mine == motos, f"{f}: proxy {mine}, moto {motos}"
    # What moto answers itself (an unknown filter) still works.
    f = [{"Name": "instance-type", "Values": ["t3.micro"]}, {"Name": "tag:group", "Values": ["p2"]}]
    assert len(instances(ec2p.describe_instances(Filters=f))) == len(env["I2"])


def check_stale_stop(env):
    """--stale-ms with slow stops (--stop-skip-os-ms 800): filtered reads see
    running, then stopping, then stopped, in that order and never `stopped`
    before the stop is applied; reads by ID see `stopping`."""
    ec2, moto = client(env["p2"]), client(env["moto"])
    iid = env["I2s"]
    t0 = time.monotonic()
    r = ec2.stop_instances(InstanceIds=[iid], SkipOsShutdown=True, Force=True)
    assert r["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping", r
    filtered, by_id = [], []
    while time.monotonic() - t0 < 0.8 + 0.5 + STALE_MS / 1000 + 0.6:
        for seq, got in (
            (filtered, by_tag(ec2, "group", "p2s")),
            (by_id, instances(ec2.describe_instances(InstanceIds=[iid]))),
        ):
            s = got[0]["State"]["Name"]
            if not seq or seq[-1][0] != s:
                seq.append((s, time.monotonic() - t0))
        if filtered[-1][0] == "stopped" and by_id[-1][0] == "stopped":
            break
        time.sleep(0.05)
    print(f"    filtered: {[(s, round(t, 2)) for s, t in filtered]}")
    print(f"    by ID:    {[(s, round(t, 2)) for s, t in by_id]}")
    order = ["running", "stopping", "stopped"]
    for seq in (filtered, by_id):
        names = [s for s, _ in seq]
        assert names == sorted(names, key=order.index) and len(set(names)) == len(names), seq
        assert names[-1] == "stopped", seq
        assert dict(seq)["stopped"] >= 0.8 + 0.5 - 0.05, f"stopped before the stop was applied: {seq}"
    assert "stopping" in dict(by_id), by_id
    assert instances(moto.describe_instances(InstanceIds=[iid]))[0]["State"]["Name"] == "stopped"


def check_throttle_buckets(env):
    """--throttle: StartInstances' bucket (5, 2/s) empties after 5 calls, then
    refills at 2 per second; RequestLimitExceeded is HTTP 503."""
    ec2 = client(env["p3"])
    iid = env["I3"]
    start = time.monotonic()
    results = [error_of(ec2.start_instances, InstanceIds=[iid]) for _ in range(8)]
    elapsed = time.monotonic() - start
    ok = sum(1 for c, _ in results if c is None)
    print(f"    burst of 8 StartInstances in {elapsed:.2f} s: {ok} answered, {8 - ok} throttled")
    assert 5 <= ok <= 5 + 2 * elapsed + 1, results
    refused = [r for r in results if r[0] is not None]
    assert refused and all(r == ("RequestLimitExceeded", 503) for r in refused), results
    # Empty it, then count what 2 s let through: 2 tokens a second.
    while error_of(ec2.start_instances, InstanceIds=[iid])[0] is None:
        pass
    t = time.monotonic()
    ok = 0
    while time.monotonic() - t < 2.0:
        if error_of(ec2.start_instances, InstanceIds=[iid])[0] is None:
            ok += 1
        time.sleep(0.04)
    print(f"    in the next 2 s: {ok} answered")
    assert 3 <= ok <= 5, f"refill of {ok} calls in 2 s, not 2 a second"
    # Another action's bucket is its own.
    assert error_of(ec2.describe_instances, InstanceIds=[iid]) == (None, 200)


def burst(endpoint, n, call, threads=8):
    """`n` calls from `threads` threads: (answered, throttled, seconds)."""
    counts = {"ok": 0, "throttled": 0}
    lk = threading.Lock()
    left = [n]

    def work():
        ec2 = client(endpoint)
        while True:
            with lk:
                if left[0] == 0:
                    return
                left[0] -= 1
            code, _ = error_of(call, ec2)
            with lk:
                counts["ok" if code is None else "throttled"] += 1
                assert code in (None, "RequestLimitExceeded"), code

    t = time.monotonic()
    ts = [threading.Thread(target=work) for _ in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return counts["ok"], counts["throttled"], time.monotonic() - t


def check_throttle_describe(env):
    """--throttle: DescribeInstances by ID only (unfiltered: 50, 10/s) and
    filtered (100, 20/s) have their own buckets of AWS's sizes."""
    iid = env["I3"]
    ok, thr, secs = burst(env["p3"], 80, lambda c: c.describe_instances(InstanceIds=[iid]))
    print(f"    unfiltered: 80 calls in {secs:.2f} s: {ok} answered, {thr} throttled")
    assert 50 <= ok <= 50 + 10 * secs + 1, (ok, secs)
    assert thr >= 1 or 80 <= 50 + 10 * secs + 1
    f = [{"Name": "tag:group", "Values": ["p3"]}]
    ok, thr, secs = burst(env["p3"], 200, lambda c: c.describe_instances(Filters=f))
    print(f"    filtered: 200 calls in {secs:.2f} s: {ok} answered, {thr} throttled")
    assert 100 <= ok <= 100 + 20 * secs + 1, (ok, secs)
    assert thr >= 1 or 200 <= 100 + 20 * secs + 1


def check_throttle_endpoint(env):
    """POST /_throttle?secs=N: every EC2 call RequestLimitExceeded (503) for
    N s, CloudWatch Logs untouched."""
    ec2, logs = client(env["p0"]), client(env["p0"], "logs")
    post(f"{env['p0']}/_throttle?secs=1.5")
    t = time.monotonic()
    assert error_of(ec2.describe_instances) == ("RequestLimitExceeded", 503)
    assert error_of(ec2.create_tags, Resources=[env["I0"]], Tags=[{"Key": "t", "Value": "1"}]) == (
        "RequestLimitExceeded", 503)
    assert error_of(logs.describe_log_groups) == (None, 200)
    time.sleep(max(0, 1.6 - (time.monotonic() - t)))
    assert error_of(ec2.describe_instances) == (None, 200)


def check_counts(env):
    """GET /_counts counts every request by Action / X-Amz-Target, and the
    throttled ones; POST /_counts/reset starts again."""
    p0 = env["p0"]
    ec2, logs = client(p0), client(p0, "logs")
    post(f"{p0}/_counts/reset")
    t = now_ms()
    by_tag(ec2, "group", "p0")
    ec2.describe_instances(InstanceIds=[env["I0"]])
    ec2.create_tags(Resources=[env["I0"]], Tags=[{"Key": "count", "Value": "1"}])
    logs.describe_log_groups()
    post(f"{p0}/_throttle?secs=0.3")
    assert error_of(ec2.describe_instances)[0] == "RequestLimitExceeded"
    c = get_json(f"{p0}/_counts")
    assert c["by_action"] == {"DescribeInstances": 3, "CreateTags": 1,
                              "Logs_20140328.DescribeLogGroups": 1}, c
    assert c["throttled"] == {"DescribeInstances": 1}, c
    assert abs(c["since_ms"] - t) < 1000, c
    post(f"{p0}/_counts/reset")
    c = get_json(f"{p0}/_counts")
    assert c["by_action"] == {} and c["throttled"] == {}, c
    time.sleep(0.35)


def check_omit(env):
    """POST /_omit?instance=ID: the next filtered answer that would include ID
    leaves it out, once; reads by ID and answers without it don't count."""
    p0 = env["p0"]
    ec2 = client(p0)
    i0, i1 = env["I0"], env["I1"]
    post(f"{p0}/_omit?instance={i0}")
    post(f"{p0}/_omit?instance={i1}")
    assert [i["InstanceId"] for i in instances(ec2.describe_instances(InstanceIds=[i0]))] == [i0]
    assert [i["InstanceId"] for i in by_tag(ec2, "group", "p0")] == [], "not omitted"
    assert [i["InstanceId"] for i in by_tag(ec2, "group", "p0")] == [i0], "omitted twice"
    assert [i["InstanceId"] for i in by_tag(ec2, "group", "p1")] == [], "not omitted when it came"
    assert [i["InstanceId"] for i in by_tag(ec2, "group", "p1")] == [i1]


def check_stale_read(env):
    """POST /_stale_read?secs=1: the next filtered read answers as the fleet
    was 1 s ago, once."""
    p0 = env["p0"]
    ec2 = client(p0)
    i0 = env["I0"]
    ec2.create_tags(Resources=[i0], Tags=[{"Key": "epoch", "Value": "1"}])
    time.sleep(1.3)
    ec2.create_tags(Resources=[i0], Tags=[{"Key": "epoch", "Value": "2"}])
    time.sleep(0.3)
    assert tags(by_tag(ec2, "group", "p0")[0])["epoch"] == "2"
    post(f"{p0}/_stale_read?secs=1")
    assert tags(instances(ec2.describe_instances(InstanceIds=[i0]))[0])["epoch"] == "2"
    old = by_tag(ec2, "group", "p0")
    assert [tags(i)["epoch"] for i in old] == ["1"], f"not the fleet of 1 s ago: {old}"
    assert [tags(i)["epoch"] for i in by_tag(ec2, "group", "p0")] == ["2"], "stale twice"


def check_slow_stop(env):
    """The existing slow stop (--stop-skip-os-ms 1000): answered `stopping`
    at once, reported `stopping` while moto still runs it, then `stopped`;
    /_stops records it; mode `fail` still refuses stops."""
    p4 = env["p4"]
    ec2, moto = client(p4), client(env["moto"])
    iid = env["I4"]
    r, ms = timed(ec2.stop_instances, InstanceIds=[iid], SkipOsShutdown=True, Force=True)
    t0 = time.monotonic()
    assert r["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping" and ms < 900, (r, ms)
    assert instances(ec2.describe_instances(InstanceIds=[iid]))[0]["State"]["Name"] == "stopping"
    assert instances(moto.describe_instances(InstanceIds=[iid]))[0]["State"]["Name"] == "running"
    seen = []
    while time.monotonic() - t0 < 4:
        s = instances(ec2.describe_instances(InstanceIds=[iid]))[0]["State"]["Name"]
        if not seen or seen[-1][0] != s:
            seen.append((s, time.monotonic() - t0))
        if s == "stopped":
            break
        time.sleep(0.05)
    print(f"    {[(s, round(t, 2)) for s, t in seen]}")
    assert [s for s, _ in seen] == ["stopping", "stopped"], seen
    assert 1.0 + 0.5 - 0.1 <= seen[-1][1] <= 3.0, seen
    stops = get_json(f"{p4}/_stops")["stops"]
    assert stops and stops[-1]["instances"] == [iid] and stops[-1]["skip_os_shutdown"], stops
    post(f"{p4}/_mode?m=fail")
    assert error_of(ec2.stop_instances, InstanceIds=[iid]) == ("Unavailable", 503)
    post(f"{p4}/_mode?m=pass")


def check_modes(env):
    """The other modes, unchanged: denystop, failtags, hang, lose (then
    pass again), graceful, stall."""
    p4 = env["p4"]
    ec2, moto = client(p4), client(env["moto"])
    impatient = boto3.client(
        "ec2", endpoint_url=p4, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=1))
    a, b, c = env["I5"]

    def state(iid):
        return instances(moto.describe_instances(InstanceIds=[iid]))[0]["State"]["Name"]

    post(f"{p4}/_mode?m=denystop")
    assert error_of(ec2.stop_instances, InstanceIds=[a]) == ("UnauthorizedOperation", 403)
    post(f"{p4}/_mode?m=failtags")
    assert error_of(ec2.create_tags, Resources=[a], Tags=[{"Key": "k", "Value": "v"}]) == (
        "Unavailable", 503)
    post(f"{p4}/_mode?m=hang")
    try:
        impatient.stop_instances(InstanceIds=[a], SkipOsShutdown=True)
        raise AssertionError("hang answered")
    except ReadTimeoutError:
        pass
    assert state(a) == "running"
    post(f"{p4}/_mode?m=lose")
    t = time.monotonic()
    try:
        impatient.stop_instances(InstanceIds=[b], SkipOsShutdown=True)
        raise AssertionError("lose answered")
    except ReadTimeoutError:
        pass
    # Then `pass` again: answered, `stopping`.
    r = ec2.stop_instances(InstanceIds=[a], SkipOsShutdown=True)
    assert r["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping", r
    post(f"{p4}/_mode?m=graceful")
    ec2.stop_instances(InstanceIds=[c], SkipOsShutdown=True)  # --stop-ms 0: at once
    assert state(c) == "stopped"
    post(f"{p4}/_mode?m=stall")
    assert instances(ec2.describe_instances(InstanceIds=[c]))[0]["State"]["Name"] == "stopping"
    post(f"{p4}/_mode?m=pass")
    assert instances(ec2.describe_instances(InstanceIds=[c]))[0]["State"]["Name"] == "stopped"
    time.sleep(max(0, 1.2 - (time.monotonic() - t)))
    assert state(b) == "stopped", "the lost stop was not applied"
    modes = [s["mode"] for s in get_json(f"{p4}/_stops")["stops"][-5:]]
    assert modes == ["denystop", "hang", "lose", "pass", "graceful"], modes


CHECKS = [
    check_default_pass_through,
    check_latency,
    check_stale_tags,
    check_stale_filters,
    check_stale_stop,
    check_throttle_buckets,
    check_throttle_describe,
    check_counts,
    check_throttle_endpoint,
    check_omit,
    check_stale_read,
    check_slow_stop,
    check_modes,
]


def setup():
    env = {"moto": start_moto()}
    moto = client(env["moto"])
    # The first RunInstances loads moto's EC2 data (seconds).
    groups = ["p0", "p1", "p2", "p2", "p2", "p2s", "p3", "p4", "p5", "p5", "p5"]
    for _ in range(60):
        try:
            r = moto.run_instances(ImageId="ami-12c6146b", MinCount=len(groups),
                                   MaxCount=len(groups), InstanceType="t3.micro")
            break
        except Exception:
            time.sleep(0.5)
    ids = [i["InstanceId"] for i in r["Instances"]]
    for iid, g in zip(ids, groups):
        moto.create_tags(Resources=[iid], Tags=[{"Key": "fleet", "Value": "chk"},
                                                {"Key": "group", "Value": g}])
    env.update(I0=ids[0], I1=ids[1], I2=ids[2:5], I2s=ids[5], I3=ids[6], I4=ids[7], I5=ids[8:11])
    client(env["moto"], "logs").describe_log_groups()  # loads moto's logs backend
    env["p0"] = start_proxy(env["moto"])
    env["p1"] = start_proxy(env["moto"], "--latency", "--seed", "7")
    env["p2"] = start_proxy(env["moto"], "--stale-ms", str(STALE_MS), "--seed", "3",
                            "--stop-ms", "800", "--stop-skip-os-ms", "800")
    env["p3"] = start_proxy(env["moto"], "--throttle")
    env["p4"] = start_proxy(env["moto"], "--stop-skip-os-ms", "1000")
    return env


def main():
    started = time.monotonic()
    passed = failed = 0
    try:
        env = setup()
        print(f"moto and 5 proxies up in {time.monotonic() - started:.1f} s")
        for check in CHECKS:
            t = time.monotonic()
            try:
                check(env)
                passed += 1
                print(f"ok   {check.__name__} ({time.monotonic() - t:.1f} s)")
            except Exception as e:
                failed += 1
                print(f"FAIL {check.__name__}: {e!r}")
                traceback.print_exc(limit=3, file=sys.stdout)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"total {time.monotonic() - started:.1f} s")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
