#!/usr/bin/env python3
"""A key-energy-user online-monitoring platform's upload endpoint, over HTTPS
(Python's own ssl module, i.e. OpenSSL: a TLS peer independent of the agent's
rustls), for tests/platform.rs.

Usage: energy_platform.py --port P --cert PEM --key PEM --state DIR [--token T]

Before answering each POST it reads DIR/mode (default "ok"):
  ok       200 "RECEIVE SUCCESS", and the records are kept
  refuse   503 with a maintenance page
  timeout  answers nothing for 60 s (the agent's timeout is shorter)
  wrong    200 "RECEIVE FAIL: ..." (a 2xx that is not success)
  html     200 with an HTML page
  drop     closes the connection without an answer
  redirect 302 to /moved, whose GET answers "RECEIVE SUCCESS" (a redirected
           POST loses its records: that answer must not count)
Every request is appended to DIR/requests.jsonl as
{"mode", "auth_ok", "records"} (records only when the mode is ok and the
token matched). A request without the right token gets 401 whatever the mode.
Prints "listening PORT" once serving.
"""

import argparse
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    def mode():
        try:
            with open(os.path.join(args.state, "mode")) as f:
                return f.read().strip() or "ok"
        except FileNotFoundError:
            return "ok"

    def log(entry):
        with LOCK, open(os.path.join(args.state, "requests.jsonl"), "a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            sys.stderr.write("%s\n" % (a,))

        def answer(self, status, body, ctype="text/plain; charset=utf-8"):
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            log({"mode": "get", "path": self.path})
            return self.answer(200, "RECEIVE SUCCESS")

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            m = mode()
            auth_ok = args.token is None or self.headers.get("Authorization") == "Bearer " + args.token
            entry = {"mode": m, "auth_ok": auth_ok}
            if not auth_ok:
                log(entry)
                return self.answer(401, "unauthorized")
            if m == "ok":
                try:
                    entry["records"] = json.loads(body)
                except ValueError as e:
                    entry["bad_json"] = str(e)
                    log(entry)
                    return self.answer(400, "RECEIVE FAIL: not JSON")
                log(entry)
                return self.answer(200, "RECEIVE SUCCESS")
            log(entry)
            if m == "refuse":
                return self.answer(503, "<html><body>系统维护中 (maintenance)</body></html>", "text/html")
            if m == "timeout":
                time.sleep(60)
                return self.answer(200, "RECEIVE SUCCESS")
            if m == "wrong":
                return self.answer(200, "RECEIVE FAIL: dataCode not registered")
            if m == "html":
                return self.answer(200, "<html><body>login</body></html>", "text/html")
            if m == "redirect":
                self.send_response(302)
                self.send_header("Location", "/moved")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if m == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            return self.answer(500, "unknown test mode " + m)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
