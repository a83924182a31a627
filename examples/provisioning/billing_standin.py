#!/usr/bin/env python3
"""A local stand-in for a cloud billing API (no cloud API is reachable here).

    python3 billing_standin.py [PORT] [DATA]     # default 9300, billing.json beside this file

GET /projects/<id>/spend with `Authorization: Bearer <token>` answers
{"project", "month_to_date", "budget", "currency", "as_of"} (money as decimal strings), 404 for
an unknown project, 401 without the token. Listens on 127.0.0.1 only; prints one line
`billing listening port=N` when ready. The token is read from BILLING_TOKEN (default
`demo-token`, the value in secrets/BILLING_TOKEN).
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9300
DATA = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "billing.json")
TOKEN = os.environ.get("BILLING_TOKEN", "demo-token")


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("authorization") != "Bearer " + TOKEN:
            return self._send(401, {"error": "unauthorized"})
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "projects" or parts[2] != "spend":
            return self._send(404, {"error": "not found"})
        with open(DATA, encoding="utf-8") as f:
            data = json.load(f)
        project = data["projects"].get(parts[1])
        if project is None:
            return self._send(404, {"error": "unknown project", "project": parts[1]})
        self._send(200, {"project": parts[1], "currency": data["currency"], "as_of": data["as_of"], **project})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("billing listening port=%d" % server.server_address[1], flush=True)
server.serve_forever()
