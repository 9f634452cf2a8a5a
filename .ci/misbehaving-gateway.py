#!/usr/bin/env python3
"""A stand-in gateway for the load generators' self-check (.ci/bench-smoke.sh).

    python3 .ci/misbehaving-gateway.py MODE   # prints its port, serves until killed

Answers every POST with, by MODE:
  shed      every other request 200, the others 503 WITH Retry-After (well-formed
            shedding: the k6 and oha checks must pass)
  500       500 Internal Server Error
  404       404 Not Found
  noretry   every other request 200, the others 503 WITHOUT Retry-After
  reset     closes the connection without an answer
The k6 thresholds and oha's status check must fail on every mode but `shed`.
Loopback only, port 0.
"""
import itertools
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
COUNT = itertools.count()
BODY = b'{"content":"Hello","stop":true}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, retry_after=False):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        if retry_after:
            self.send_header("retry-after", "1")
        self.end_headers()
        self.wfile.write(BODY)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        odd = next(COUNT) % 2 == 1
        if MODE == "shed":
            self.answer(503, retry_after=True) if odd else self.answer(200)
        elif MODE == "noretry":
            self.answer(503) if odd else self.answer(200)
        elif MODE in ("500", "404"):
            self.answer(int(MODE))
        elif MODE == "reset":
            self.close_connection = True
        else:
            raise SystemExit(f"unknown mode {MODE}")

    do_GET = do_POST


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
