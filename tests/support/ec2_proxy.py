#!/usr/bin/env python3
"""An EC2 API proxy in front of moto: makes stops take as long as AWS's, and
can misbehave, for fence tests and the rig.

  ec2_proxy.py --upstream http://127.0.0.1:PORT [--bind ADDR] [--port 0]
               [--stop-ms N] [--stop-skip-os-ms N]

Prints "listening on ADDR:PORT" once ready.

Slow stops (AWS's behaviour, which moto does not have): with --stop-ms or
--stop-skip-os-ms above 0, a StopInstances is answered at once with the
instances `stopping`, and DescribeInstances keeps reporting them `stopping`
for that many milliseconds: --stop-skip-os-ms when the request has
SkipOsShutdown=true, --stop-ms otherwise (a graceful OS shutdown is tried
first; on a hung instance AWS takes minutes). Only then is the stop applied
in moto, so whatever polls moto directly (the rig's hypervisor) sees the
instance power off at that moment. A second stop of a `stopping` instance
can only shorten its wait.

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

A request with DryRun=true is passed to moto untouched (it answers
DryRunOperation and changes nothing), whatever the mode.

GET /_stops answers a JSON object: every StopInstances request seen, with its
instance IDs, Force and SkipOsShutdown flags and when it came (`at_ms`, ms
since the Unix epoch).
"""
import argparse
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
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
STOPPING = (b"<code>64</code>", b"<name>stopping</name>")
POWER_OFF_S = 0.5


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stop-ms", type=int, default=0)
    ap.add_argument("--stop-skip-os-ms", type=int, default=0)
    args = ap.parse_args()
    state = {"mode": "pass", "stops": [], "logs": []}
    # instance ID -> (deadline, request headers, request body)
    pending = {}
    lock = threading.Lock()

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

    def apply_due():
        """Apply the stops whose wait is over, in moto. They are reported
        `stopping` for POWER_OFF_S more: whatever watches moto directly (the
        rig's hypervisor, polling) powers the instance off in that time, so
        `stopped` is never reported for an instance whose processes run."""
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with lock:
                due = [(i, p) for i, p in pending.items() if p[0] <= now and p[3] is None]
                for i, p in list(pending.items()):
                    if p[3] is not None and now - p[3] >= POWER_OFF_S:
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

    threading.Thread(target=apply_due, daemon=True).start()

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

        def do_GET(self):
            if self.path.startswith("/_stops"):
                with lock:
                    body = json.dumps({"stops": state["stops"], "logs": state["logs"]}).encode()
                return self.reply(200, body, [("Content-Type", "application/json")])
            self.reply(404, b"")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/_mode"):
                mode = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["m"][0]
                with lock:
                    state["mode"] = mode
                return self.reply(200, mode.encode())
            params = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = params.get("Action", [""])[0]
            with lock:
                mode = state["mode"]
            dry_run = params.get("DryRun", ["false"])[0] == "true"
            if action == "StopInstances" and not dry_run:
                ids = [v[0] for k, v in sorted(params.items()) if k.startswith("InstanceId.")]
                skip = params.get("SkipOsShutdown", ["false"])[0] == "true"
                force = params.get("Force", ["false"])[0] == "true"
                with lock:
                    state["stops"].append(
                        {"instances": ids, "force": force, "skip_os_shutdown": skip,
                         "mode": mode, "at_ms": int(time.time() * 1000)}
                    )
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
                if mode == "lose":
                    with lock:
                        state["mode"] = "pass"
                    time.sleep(120)
                    return
                return self.reply(code, out, headers)
            if action == "CreateTags" and mode == "failtags":
                return self.reply(503, FAIL_BODY, [("Content-Type", "text/xml")])
            code, headers, out = forward(self.path, self.headers, body)
            if code == 200 and self.headers.get("X-Amz-Target", "").endswith(".PutLogEvents"):
                # When CloudWatch Logs acknowledged a batch (benches time
                # the delivery of an event by it).
                with lock:
                    state["logs"].append(
                        {"at_ms": int(time.time() * 1000), "body": body.decode(errors="replace")}
                    )
            if action == "DescribeInstances":
                with lock:
                    stopping = list(pending)
                if stopping:
                    out = rewrite_stopping(out, stopping)
                if mode == "stall":
                    out = re.sub(
                        rb"<code>80</code>(\s*)<name>stopped</name>",
                        rb"<code>64</code>\1<name>stopping</name>",
                        out,
                    )
            self.reply(code, out, headers)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
