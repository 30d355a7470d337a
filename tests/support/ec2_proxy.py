#!/usr/bin/env python3
"""An EC2 API proxy in front of moto that can misbehave, for fence tests.

  ec2_proxy.py --upstream http://127.0.0.1:PORT [--bind ADDR] [--port 0]

Prints "listening on ADDR:PORT" once ready. Modes, set with
POST /_mode?m=<mode> (answers 200):

  pass   forward everything (default)
  fail   StopInstances answers 503 Unavailable (the stop never happens)
  hang   StopInstances never answers (the client times out)
  stall  StopInstances goes through, but DescribeInstances reports every
         stopped instance as still `stopping` (a stop that never completes)
"""
import argparse
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    state = {"mode": "pass"}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("ec2-proxy: " + (fmt % a) + "\n")

        def reply(self, code, body, headers=()):
            self.send_response(code)
            for k, v in headers:
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith("/_mode"):
                mode = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["m"][0]
                with lock:
                    state["mode"] = mode
                return self.reply(200, mode.encode())
            action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
            with lock:
                mode = state["mode"]
            if action == "StopInstances" and mode == "fail":
                return self.reply(503, FAIL_BODY, [("Content-Type", "text/xml")])
            if action == "StopInstances" and mode == "hang":
                time.sleep(120)
                return
            req = urllib.request.Request(
                args.upstream + self.path,
                data=body,
                method="POST",
                headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    code, headers, out = resp.status, resp.getheaders(), resp.read()
            except urllib.error.HTTPError as e:
                code, headers, out = e.code, e.headers.items(), e.read()
            if action == "DescribeInstances" and mode == "stall":
                out = re.sub(
                    rb"<code>80</code>(\s*)<name>stopped</name>",
                    rb"<code>64</code>\1<name>stopping</name>",
                    out,
                )
            self.reply(code, out, headers)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
