"""SSE clients of bench/events.py, run as a separate process so that they do not share the
daemon's interpreter: N raw-socket clients of GET /api/events driven by one selector loop.

    python bench/_events_clients.py PORT CLIENTS LINES OUT_PREFIX

Prints `ready` once every client received the stream's first comment, then reads until each
client has seen the output event stamped with the last line number (LINES - 1), or until 600 s
passed. For every stamped output frame it records the latency: the time the frame's bytes were
received (time.time() right after recv) minus the time the agent wrote the line (the stamp).
Writes OUT_PREFIX.CLIENT.lat (array of doubles, seconds, in arrival order) and OUT_PREFIX.json
({clients: [{frames, first_stamp, last_arrival, last_id, gaps, cpu}...]}).

While the stream runs a client only does C-speed work per received buffer (one findall of the
stamps); turning them into latencies is done after the run, so the clients take little of the
CPU the daemon needs. `cpu_seconds` is the clients' CPU time during the run.
"""
from __future__ import annotations

import gc
import json
import resource
import selectors
import socket
import sys
import time
from array import array

import re

from _events_lines import STAMP_RE

FRAME_ID_RE = re.compile(rb"^id: (\d+)$", re.MULTILINE)

HEADER_END = b"\r\n\r\n"


class Client:
    def __init__(self, index: int, port: int):
        self.index = index
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        request = (f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        self.sock.sendall(request)
        self.buffer = b""
        self.headers_done = False
        self.connected = False
        self.received: list[tuple[float, list]] = []  # (arrival time, [(seq, stamp), ...]) per recv
        self.last_arrival = 0.0
        self.last_id = 0
        self.done = False

    def feed(self, data: bytes, now: float, final: bytes) -> None:
        """Only C-speed work here (findall): the conversions are done after the run."""
        buf = self.buffer + data
        if not self.headers_done:
            end = buf.find(HEADER_END)
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"client {self.index}: {buf[:200]!r}")
            self.headers_done = True
            buf = buf[end + len(HEADER_END):]
        if not self.connected and b": connected" in buf:
            self.connected = True
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.buffer = buf
            return
        complete, self.buffer = buf[:cut + 2], buf[cut + 2:]
        stamps = STAMP_RE.findall(complete)
        if stamps:
            self.received.append((now, stamps))
            if final in complete:
                at = complete.rfind(final)
                self.last_id = int(FRAME_ID_RE.findall(complete, 0, at)[-1])
                self.done = True
                self.last_arrival = now

    def results(self) -> dict:
        """Latency of each output frame (a tool result carries its stamp twice: counted once)."""
        latencies = array("d")
        last_seq = -1
        gaps = frames = 0
        first_stamp = None
        for now, stamps in self.received:
            for seq_b, stamp_b in stamps:
                seq = int(seq_b)
                if seq == last_seq:
                    continue
                stamp = float(stamp_b)
                if first_stamp is None:
                    first_stamp = stamp
                if seq != last_seq + 1:
                    gaps += 1
                last_seq = seq
                latencies.append(now - stamp)
                frames += 1
        return {"latencies": latencies, "frames": frames, "gaps": gaps, "first_stamp": first_stamp,
                "last_seq": last_seq}


def main() -> int:
    # what is kept per received buffer are small containers: the cyclic collector would pause this
    # process for longer and longer as they pile up, and the pauses would count as latency
    gc.disable()
    port, count, lines, prefix = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    sel = selectors.DefaultSelector()
    clients = [Client(i, port) for i in range(count)]
    for client in clients:
        sel.register(client.sock, selectors.EVENT_READ, client)
    announced = False
    deadline = time.monotonic() + 600
    clock = time.time
    final = b"@ao:%d:" % (lines - 1)
    while not all(c.done for c in clients) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            client = key.data
            data = client.sock.recv(1 << 20)
            now = clock()
            if not data:
                sel.unregister(client.sock)
                client.done = True
                continue
            client.feed(data, now, final)
        if not announced and all(c.connected for c in clients):
            announced = True
            print("ready", flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {"clients": [], "cpu_seconds": usage.ru_utime + usage.ru_stime}
    for client in clients:
        result = client.results()
        with open(f"{prefix}.{client.index}.lat", "wb") as handle:
            result["latencies"].tofile(handle)
        summary["clients"].append({"frames": result["frames"], "first_stamp": result["first_stamp"],
                                   "last_arrival": client.last_arrival, "last_id": client.last_id,
                                   "gaps": result["gaps"], "complete": result["last_seq"] == lines - 1})
        client.sock.close()
    with open(f"{prefix}.json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
