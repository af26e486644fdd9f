"""A small publisher for otpd (docs/job-v1.md), on pika.

It builds a send-code job, signs it when given a key (the `otpd-signature` v2 scheme),
publishes it with publisher confirms, and can wait for the challenge's status events:

    from otpd_client import Publisher, job
    with Publisher("amqp://guest:guest@127.0.0.1:5672/%2f") as otpd:
        j = job(channel="sms", to="+14155550123", code="271828", account_id="user-1")
        with otpd.watch(j["challenge_id"]) as events:
            otpd.publish(j)
            print(events.terminal(timeout=30))
"""

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pika

SIGNATURE_HEADER = "otpd-signature"
# A challenge's job ends in one of these; receipts may later move `sent` on.
TERMINAL = {"sent", "delivered", "undelivered", "failed", "expired", "rate_limited", "rejected"}


def sign(body: bytes, key_id: str, key: bytes, kind: str = "", now: int | None = None) -> str:
    """The otpd-signature header: HMAC-SHA256 over "<t>\\n<type>\\n<body>"."""
    t = int(time.time()) if now is None else now
    mac = hmac.new(key, f"{t}\n{kind}\n".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},kid={key_id},v2={mac}"


def job(*, channel: str, to: str, code: str, account_id: str, challenge_id: str | None = None,
        ttl_secs: int = 300, locale: str | None = None, template: str | None = None,
        metadata: dict[str, str] | None = None, client_ip: str | None = None) -> dict:
    """A version 1 job; `challenge_id` defaults to a fresh one (it is the idempotency key)."""
    expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_secs)
    j = {
        "version": 1,
        "challenge_id": challenge_id or f"py-{uuid.uuid4().hex}",
        "account_id": account_id,
        "channel": channel,
        "to": to,
        "code": code,
        "expires_at": expires.isoformat().replace("+00:00", "Z"),
    }
    for key, value in (("locale", locale), ("template", template),
                       ("metadata", metadata), ("client_ip", client_ip)):
        if value is not None:
            j[key] = value
    return j


class Events:
    """A queue of its own on the events exchange, read for one challenge."""

    def __init__(self, channel, exchange: str, challenge_id: str):
        self._ch = channel
        self._id = challenge_id
        self._queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(self._queue, exchange, routing_key="delivery.#")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._ch.queue_delete(self._queue)

    def terminal(self, timeout: float = 30.0) -> dict:
        """The challenge's first terminal event; TimeoutError if none comes in time."""
        deadline = time.monotonic() + timeout
        for _method, _props, body in self._ch.consume(self._queue, auto_ack=True,
                                                      inactivity_timeout=0.5):
            if time.monotonic() > deadline:
                break
            if body is None:
                continue
            event = json.loads(body)
            if event.get("challenge_id") == self._id and event.get("state") in TERMINAL:
                self._ch.cancel()
                return event
        self._ch.cancel()
        raise TimeoutError(f"no terminal event for {self._id} in {timeout} s")


class Publisher:
    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/%2f", *,
                 jobs_exchange: str = "otpd.jobs", events_exchange: str = "otpd.events",
                 key_id: str | None = None, key: bytes | None = None):
        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        self._ch = self._conn.channel()
        self._ch.confirm_delivery()
        self._jobs = jobs_exchange
        self._events = events_exchange
        self._key = (key_id, key) if key_id and key else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._conn.close()

    def watch(self, challenge_id: str) -> Events:
        """Starts listening for a challenge's events; call it before publishing the job."""
        return Events(self._conn.channel(), self._events, challenge_id)

    def publish(self, j: dict) -> None:
        """Publishes a job; returns once the broker confirms it (raises if it does not)."""
        self._send(json.dumps(j, separators=(",", ":")).encode(), j["channel"],
                   j["challenge_id"], kind="")

    def verified(self, challenge_id: str) -> None:
        """Reports that the challenge's code was entered correctly."""
        self._feedback("verified", challenge_id)

    def cancel(self, challenge_id: str) -> None:
        """Abandons the challenge: its pending fallback steps are not sent."""
        self._feedback("cancel", challenge_id)

    def _feedback(self, kind: str, challenge_id: str) -> None:
        body = json.dumps({"version": 1, "challenge_id": challenge_id}).encode()
        self._send(body, kind, challenge_id, kind=kind)

    def _send(self, body: bytes, routing_key: str, message_id: str, kind: str) -> None:
        headers = {}
        if self._key:
            headers[SIGNATURE_HEADER] = sign(body, self._key[0], self._key[1], kind)
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=message_id, type=kind or None,
                                     headers=headers or None)
        # With confirms on, pika raises NackError or UnroutableError unless the broker took it.
        self._ch.basic_publish(self._jobs, routing_key, body, props, mandatory=True)
