"""Publishes one job and prints its terminal event as JSON; exits 0 if it was sent.

    python3 send.py --to +14155550123 --code 271828 [--channel sms] [--account-id A]
        [--url amqp://…] [--jobs-exchange otpd.jobs] [--events-exchange otpd.events]
        [--key-id k1 --key SECRET]
"""

import argparse
import json
import sys

from otpd_client import Publisher, job


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--jobs-exchange", default="otpd.jobs")
    p.add_argument("--events-exchange", default="otpd.events")
    p.add_argument("--channel", default="sms", choices=["sms", "voice", "whatsapp", "email"])
    p.add_argument("--to", required=True)
    p.add_argument("--code", required=True)
    p.add_argument("--account-id", default="demo-account")
    p.add_argument("--key-id")
    p.add_argument("--key")
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()
    key = a.key.encode() if a.key else None
    with Publisher(a.url, jobs_exchange=a.jobs_exchange, events_exchange=a.events_exchange,
                   key_id=a.key_id, key=key) as otpd:
        j = job(channel=a.channel, to=a.to, code=a.code, account_id=a.account_id)
        with otpd.watch(j["challenge_id"]) as events:
            otpd.publish(j)
            event = events.terminal(timeout=a.timeout)
    print(json.dumps(event))
    return 0 if event["state"] == "sent" else 1


if __name__ == "__main__":
    sys.exit(main())
