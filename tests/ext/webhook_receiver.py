"""A webhook receiver for the test suite: verifies every delivery with the `standardwebhooks`
package (the real library, as a team's backend would use it) and records what arrived.

    python webhook_receiver.py PORT SECRET [MODE]

Prints `listening PORT` once it accepts connections. Deliveries go to POST /hook; the test
steers it through the control API:

- POST /control/mode {"mode": "ok" | "fail" | "hang", "hang_seconds": n, "delay_ms": n}
  (MODE on the command line sets the first one, "ok" by default). "ok" verifies and answers 204 (after delay_ms), "fail" answers 500, "hang" waits
  hang_seconds before answering 500 (past the sender's timeout).
- GET /control/state: {"accepted": [{"id", "type", "user_id", "body"}], "attempts": n,
  "invalid": n, "overlaps": n}. `accepted` holds every delivery answered 2xx, in arrival
  order (duplicates included); `overlaps` counts deliveries that arrived while another one
  with the same webhook-id was still being handled.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
STATE = {"accepted": [], "attempts": 0, "invalid": 0, "overlaps": 0}
MODE = {"mode": "ok", "hang_seconds": 3.0, "delay_ms": 0}
IN_FLIGHT = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path != "/control/state":
            return self.answer(404)
        with LOCK:
            body = json.dumps(STATE).encode()
        self.answer(200, body)

    def do_POST(self):
        if self.path == "/control/mode":
            with LOCK:
                MODE.update(json.loads(self.body() or b"{}"))
            return self.answer(204)
        if self.path != "/hook":
            return self.answer(404)
        raw = self.body()
        webhook_id = self.headers.get("webhook-id", "")
        with LOCK:
            STATE["attempts"] += 1
            mode = dict(MODE)
            if IN_FLIGHT.get(webhook_id, 0) > 0:
                STATE["overlaps"] += 1
            IN_FLIGHT[webhook_id] = IN_FLIGHT.get(webhook_id, 0) + 1
        try:
            self.handle_delivery(raw, webhook_id, mode)
        finally:
            with LOCK:
                IN_FLIGHT[webhook_id] -= 1

    def handle_delivery(self, raw, webhook_id, mode):
        try:
            event = WEBHOOK.verify(raw, dict(self.headers.items()))
        except WebhookVerificationError:
            with LOCK:
                STATE["invalid"] += 1
            return self.answer(400)
        if event.get("id") != webhook_id:
            with LOCK:
                STATE["invalid"] += 1
            return self.answer(400)
        if mode["mode"] == "fail":
            return self.answer(500)
        if mode["mode"] == "hang":
            time.sleep(float(mode["hang_seconds"]))
            return self.answer(500)
        if mode["delay_ms"]:
            time.sleep(float(mode["delay_ms"]) / 1000)
        with LOCK:
            STATE["accepted"].append(
                {
                    "id": webhook_id,
                    "type": event["type"],
                    "user_id": event["data"]["user_id"],
                    "body": raw.decode(),
                }
            )
        self.answer(204)


if __name__ == "__main__":
    port, secret = int(sys.argv[1]), sys.argv[2]
    if len(sys.argv) > 3:
        MODE["mode"] = sys.argv[3]
    WEBHOOK = Webhook(secret)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
