#!/usr/bin/env python3
# bench/agents/rawflood.py -- many-source junk flooder for the benchmark lab
# (issue 14 item 3), run inside the lab's flooder namespace by bench/flood.mjs
# (never by hand against anything else).
#
# Spoofing 100,000 source addresses with one socket per address would need
# 100,000 sockets (or addresses: the kernel takes minutes to add them), and
# Node cannot choose a datagram's source per send. This agent writes whole
# Ethernet frames on an AF_PACKET socket instead: every frame is built once,
# before the clock starts (its own source address, its UDP checksum: IPv6
# requires one), and the loop only hands the next frame to the kernel, each
# datagram from the next source, round-robin over all of them. The lab's
# flooder holds none of these addresses, so nobody answers for them (ARP or
# neighbour discovery), and the client's own addresses are never among them.
#
# Reads one JSON task on stdin:
#   { ifname, srcMac, dstMac, dst, port, family (4|6), sources: [addr...] |
#     sources6: {prefix: "2001:db8::1:0:0", count},
#     payloads: [base64...], durationMs, maxPackets, rate (0 = as fast as it can) }
# Bounded by durationMs (at most 120 s) and maxPackets. Prints one JSON line.
import base64
import ipaddress
import json
import socket
import struct
import sys
import time

task = json.load(sys.stdin)
dst = ipaddress.ip_address(task["dst"])
LAB4 = ipaddress.ip_network("198.51.100.0/24")
LAB6 = ipaddress.ip_network("2001:db8::/64")
lab = LAB4 if dst.version == 4 else LAB6
if dst not in lab:
    sys.exit(f"refusing to flood non-lab address {dst}")
duration = float(task["durationMs"]) / 1000
max_packets = int(task["maxPackets"])
rate = float(task.get("rate") or 0)
if not (0 < duration <= 120 and 0 < max_packets <= 50_000_000):
    sys.exit("bad flood task (durationMs 1..120000, maxPackets 1..50,000,000)")

if "sources6" in task:
    base = int(ipaddress.IPv6Address(task["sources6"]["prefix"]))
    sources = [ipaddress.IPv6Address(base + 1 + i) for i in range(int(task["sources6"]["count"]))]
else:
    sources = [ipaddress.ip_address(a) for a in task["sources"]]
for s in sources:
    if s not in lab or s.version != dst.version:
        sys.exit(f"refusing non-lab source address {s}")
if not sources:
    sys.exit("no source addresses")

payloads = [base64.b64decode(p) for p in task["payloads"]]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
eth = mac(task["dstMac"]) + mac(task["srcMac"]) + struct.pack("!H", 0x0800 if dst.version == 4 else 0x86DD)
port = int(task["port"])


def fold(s):
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b):
    if len(b) % 2:
        b += b"\0"
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


# Per payload: the part of the UDP checksum that does not depend on the source.
SPORT = 40000
partial = []
for p in payloads:
    ulen = 8 + len(p)
    partial.append(words(p) + SPORT + port + ulen + ulen + 17)  # UDP header + pseudo-header length and next header
dst_words = words(dst.packed)


def frame(i, src):
    p = payloads[i % len(payloads)]
    ulen = 8 + len(p)
    if dst.version == 6:
        c = fold(partial[i % len(payloads)] + dst_words + words(src.packed))
        c = (~c) & 0xFFFF or 0xFFFF
        ip = struct.pack("!IHBB", 0x60000000, ulen, 17, 64) + src.packed + dst.packed
    else:
        c = 0  # IPv4: no UDP checksum
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, i & 0xFFFF, 0, 64, 17, 0, src.packed, dst.packed)
        hc = (~fold(words(hdr))) & 0xFFFF
        ip = hdr[:10] + struct.pack("!H", hc) + hdr[12:]
    return eth + ip + struct.pack("!HHHH", SPORT, port, ulen, c) + p


frames = [frame(i, s) for i, s in enumerate(sources)]
n = len(frames)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
try:
    s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
except OSError:
    pass
s.bind((task["ifname"], 0))
send = s.send

sent = 0
errors = 0
t0 = time.monotonic()
deadline = t0 + duration
CHUNK = 256
while sent < max_packets:
    now = time.monotonic()
    if now >= deadline:
        break
    todo = min(CHUNK, max_packets - sent)
    if rate > 0:
        todo = min(todo, int(rate * (now - t0)) - sent)
        if todo <= 0:
            time.sleep(0.0005)
            continue
    for k in range(sent, sent + todo):
        try:
            send(frames[k % n])
        except OSError:
            errors += 1
    sent += todo
elapsed = time.monotonic() - t0
s.close()
print(json.dumps({"attempted": sent, "sendErrors": errors, "elapsedMs": round(elapsed * 1000), "sources": n,
                  "achievedRate": round((sent - errors) / elapsed) if elapsed > 0 else 0,
                  "allSourcesUsed": sent - errors >= n}))
