#!/usr/bin/env python3
"""A small IMDSv2 stand-in for tests and the local rig.

It implements the token flow the AWS SDK's IMDS client uses:

  PUT /latest/api/token  with X-aws-ec2-metadata-token-ttl-seconds: N
      -> 200, body = token, header X-aws-ec2-metadata-token-ttl-seconds: N
  GET /latest/...        with X-aws-ec2-metadata-token: <token>
      -> 200 / 404; without a valid token -> 401

Served paths: /latest/user-data (from --user-data FILE, re-read on every
request; 404 when the file does not exist), /latest/meta-data/instance-id,
/latest/meta-data/local-ipv4. GET /_stats returns JSON counters so tests can
check that the token flow was used.

Usage: imds.py --port 0 --user-data FILE [--instance-id ID] [--bind ADDR]
It prints "listening on ADDR:PORT" on stdout once ready.
"""
import argparse
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user-data", required=True)
    ap.add_argument("--instance-id", default="i-0123456789abcdef0")
    ap.add_argument("--local-ipv4", default="10.0.0.10")
    args = ap.parse_args()

    tokens = set()
    stats = {"tokens_issued": 0, "rejected": 0, "served": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("imds: " + (fmt % a) + "\n")

        def reply(self, code, body=b"", headers=None):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if self.path != "/latest/api/token":
                return self.reply(404)
            ttl = self.headers.get(TTL_HEADER)
            if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self.reply(400)
            token = secrets.token_urlsafe(24)
            with lock:
                tokens.add(token)
                stats["tokens_issued"] += 1
            self.reply(200, token.encode(), {TTL_HEADER: ttl})

        def do_GET(self):
            if self.path == "/_stats":
                with lock:
                    body = json.dumps(stats).encode()
                return self.reply(200, body, {"Content-Type": "application/json"})
            with lock:
                ok = self.headers.get(TOKEN_HEADER) in tokens
                if not ok:
                    stats["rejected"] += 1
            if not ok:
                return self.reply(401)
            if self.path == "/latest/user-data":
                try:
                    with open(args.user_data, "rb") as f:
                        body = f.read()
                except FileNotFoundError:
                    return self.reply(404)
            elif self.path == "/latest/meta-data/instance-id":
                body = args.instance_id.encode()
            elif self.path == "/latest/meta-data/local-ipv4":
                body = args.local_ipv4.encode()
            else:
                return self.reply(404)
            with lock:
                stats["served"] += 1
            self.reply(200, body, {"Content-Type": "text/plain"})

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
