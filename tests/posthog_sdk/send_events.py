"""Sends a few hundred events to nudge-serve through the official PostHog Python SDK.

Prints, as JSON on stdout, what a correct server must have stored: the uuid of every
event that should be kept and of every event sent after a consent withdrawal, plus the
personal data the events carried (which must never be stored).
"""

import argparse
import json
import random
import sys
import uuid
from datetime import datetime, timedelta, timezone

from posthog import Posthog


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    errors = []
    client = Posthog(
        args.token,
        host=args.host,
        gzip=True,
        flush_at=50,
        flush_interval=0.2,
        max_retries=1,
        disable_geoip=True,
        enable_exception_autocapture=False,
        on_error=lambda err, batch: errors.append(str(err)),
    )

    start = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)
    kept, blocked, pii = [], [], []

    def event_uuid(event, distinct_id, at):
        # uuid5 of a fixed namespace: the same run sends the same uuids again.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{distinct_id}/{event}/{at.isoformat()}"))

    def send(event, distinct_id, at, properties, expect_kept=True):
        sent = event_uuid(event, distinct_id, at)
        client.capture(event, distinct_id=distinct_id, properties=properties, timestamp=at, uuid=sent)
        (kept if expect_kept else blocked).append(sent)

    withdrawing = {f"u{i}" for i in range(0, args.users, 7)}
    for i in range(args.users):
        user, anon = f"u{i}", f"anon-{i}-{rng.randrange(10**6)}"
        email, phone = f"person{i}@example.com", f"+49 170 555{i:04d}"
        pii.extend([email, phone, anon, user])
        at = start + timedelta(minutes=i)
        send("landing_view", anon, at, {"campaign": "autumn", "utm_source": "ads", "$ip": "203.0.113.9"})
        send("signup_completed", anon, at + timedelta(minutes=1), {"method": "email", "email": email})
        send("$identify", user, at + timedelta(minutes=2),
             {"$anon_distinct_id": anon, "$set": {"email": email, "phone": phone, "name": f"Person {i}"}})
        alias_at = at + timedelta(minutes=3)
        alias_uuid = event_uuid("$create_alias", anon, alias_at)
        client.alias(previous_id=anon, distinct_id=user, timestamp=alias_at, uuid=alias_uuid)
        kept.append(alias_uuid)
        for day in range(3):
            t = at + timedelta(days=day, hours=1)
            send("app_opened", user, t, {"source": rng.choice(["push", "email", "organic"]), "phone": phone})
            send("contact_created", user, t + timedelta(minutes=1), {"contact_count": rng.randrange(1, 40)})
            send("notification_sent", user, t + timedelta(hours=2),
                 {"notification_id": f"n-{i}-{day}", "notif_type": "contact_reminder", "arm": "logging"})
        if user in withdrawing:
            t = at + timedelta(days=4)
            send("consent_analytics_changed", user, t, {"granted": False})
            send("app_opened", user, t + timedelta(hours=1), {"source": "organic"}, expect_kept=False)
            send("paywall_view", user, t + timedelta(hours=2), {"placement": "contact_limit"}, expect_kept=False)
            send("consent_analytics_changed", user, t + timedelta(days=1), {"granted": True})
            send("app_opened", user, t + timedelta(days=1, hours=1), {"source": "push"})

    client.flush()
    client.shutdown()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"kept": kept, "blocked": blocked, "pii": pii}))


if __name__ == "__main__":
    main()
