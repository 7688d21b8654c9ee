"""Grants a new user's gift pack once per person, whichever mini program they come through
first: a wxauth webhook receiver.

    python gift_once.py --port 9000 --secret whsec_... [--db gifts.db]

Every delivery is verified with the `standardwebhooks` package, then handled in one SQLite
transaction together with its webhook-id, the idempotency key: a delivery sent again (wxauth
delivers at least once) finds its id already there and changes nothing. The receiver answers
2xx only once that transaction has committed, so a crash before it means wxauth sends again.

- `person.created` grants the gift (once per person).
- `person.merged` moves the person that went into the survivor: when both had a gift (the
  same human came through a mini program without unionid first), the second is recorded as a
  duplicate for a human to look at.

GET /gifts shows what was granted, as JSON.
"""

import argparse
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (webhook_id TEXT PRIMARY KEY, type TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gifts (
    user_id      TEXT PRIMARY KEY,
    granted_at   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    duplicate_of TEXT
);
"""


class Gifts:
    """The gift ledger, in SQLite; one writer at a time."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def handle(self, event):
        """Applies one verified event, once. Returns what it did."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                done = self.db.execute(
                    "INSERT OR IGNORE INTO handled (webhook_id, type) VALUES (?, ?)",
                    (event["id"], event["type"]),
                ).rowcount
                said = "already handled" if done == 0 else self.apply(event)
                self.db.execute("COMMIT")
                return said
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def apply(self, event):
        data = event["data"]
        if event["type"] == "person.created":
            self.db.execute(
                "INSERT OR IGNORE INTO gifts (user_id, granted_at, event_id) VALUES (?, ?, ?)",
                (data["user_id"], event["occurred_at"], event["id"]),
            )
            return f"gift granted to {data['user_id']}"
        if event["type"] == "person.merged":
            survivor, merged = data["survivor_id"], data["merged_id"]
            has = lambda user: self.db.execute(  # noqa: E731
                "SELECT 1 FROM gifts WHERE user_id = ? AND duplicate_of IS NULL", (user,)
            ).fetchone()
            if has(merged) and has(survivor):
                self.db.execute(
                    "UPDATE gifts SET duplicate_of = ? WHERE user_id = ?", (survivor, merged)
                )
                return f"{merged} merged into {survivor}: both got a gift, one is a duplicate"
            self.db.execute(
                "UPDATE gifts SET user_id = ? WHERE user_id = ?", (survivor, merged)
            )
            return f"{merged} merged into {survivor}"
        return f"{event['type']}: nothing to do"

    def all(self):
        with self.lock:
            rows = self.db.execute(
                "SELECT user_id, granted_at, event_id, duplicate_of FROM gifts ORDER BY granted_at"
            ).fetchall()
        return [
            {"user_id": u, "granted_at": g, "event_id": e, "duplicate_of": d}
            for (u, g, e, d) in rows
        ]


def handler(webhook, gifts, path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            if data:
                self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path != "/gifts":
                return self.answer(404)
            self.answer(200, {"gifts": gifts.all()})

        def do_POST(self):
            if self.path != path:
                return self.answer(404)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = webhook.verify(body, dict(self.headers.items()))
            except WebhookVerificationError:
                print("refused a delivery that does not verify", flush=True)
                return self.answer(400)
            print(gifts.handle(event), flush=True)
            self.answer(204)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", required=True, help="the webhook's whsec_ secret")
    parser.add_argument("--db", default="gifts.db")
    parser.add_argument("--path", default="/webhooks")
    args = parser.parse_args()
    gifts = Gifts(args.db)
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), handler(Webhook(args.secret), gifts, args.path)
    )
    print(f"gift-once listening on http://127.0.0.1:{server.server_address[1]}{args.path}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
