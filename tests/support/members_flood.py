#!/usr/bin/env python3
"""Throw hostile datagrams at a member's channel (rig test only).

usage: members_flood.py KEY_FILE HOST PORT SECONDS

For SECONDS, in a loop: oversize, malformed (truncated, bad magic, bad
kind), forged (sealed with another key), stale (sealed with the right key,
sent an hour ago) and replayed (one authentic ping request, sent again and
again). Prints what it sent as JSON.
"""
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

key_file, host, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
key = open(key_file, "rb").read().strip()


def seal(k, kind, sender, seq, sent_ms, body):
    head = b"CWM1" + bytes([kind]) + struct.pack(">QQQ", sender, seq, sent_ms) + body
    return head + hmac.new(k, head, hashlib.sha256).digest()


def ping_req(k, seq, sent_ms):
    # target: backend 1 (role 1, id 1)
    return seal(k, 1, 0xC0FFEE, seq, sent_ms, bytes([1]) + struct.pack(">I", 1))


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = (host, port)
now = lambda: int(time.time() * 1000)
replayed_ms = now()
replayed = ping_req(key, 1, replayed_ms)
sent = {"oversize": 0, "malformed": 0, "forged": 0, "stale": 0, "replayed": 0}
s.sendto(replayed, dst)  # the first copy is authentic
end = time.time() + secs
seq = 1000
while time.time() < end:
    s.sendto(os.urandom(1500), dst)
    sent["oversize"] += 1
    good = ping_req(key, seq, now())
    seq += 1
    for bad in (good[:-1], b"XXXX" + good[4:], good[:4] + b"\x07" + good[5:], b""):
        s.sendto(bad, dst)
        sent["malformed"] += 1
    s.sendto(ping_req(b"k" * 32, seq, now()), dst)
    sent["forged"] += 1
    seq += 1
    s.sendto(ping_req(key, seq, now() - 3_600_000), dst)
    sent["stale"] += 1
    seq += 1
    if now() - replayed_ms < 8000:
        # Replays while the original is still inside the time window.
        s.sendto(replayed, dst)
        sent["replayed"] += 1
    time.sleep(0.002)
print(json.dumps(sent))
