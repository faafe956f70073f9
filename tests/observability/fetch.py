"""Fetches URLs from inside a network namespace for a test: JSON list of URLs in, answers out.

Run as ``ip netns exec NS python -I -S fetch.py < urls.json``; stdlib only, no proxies.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

TIMEOUT = 5.0


def fetch(opener: urllib.request.OpenerDirector, url: str) -> dict[str, object]:
    try:
        with opener.open(url, timeout=TIMEOUT) as resp:
            body = resp.read().decode("utf-8", "replace")
            return {
                "url": url,
                "status": resp.status,
                "type": resp.headers.get("Content-Type"),
                "body": body,
            }
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read().decode("utf-8", "replace")
            return {
                "url": url,
                "status": exc.code,
                "type": exc.headers.get("Content-Type"),
                "body": body,
            }
    except OSError as exc:
        return {"url": url, "status": None, "error": str(exc)}


def main() -> int:
    urls = json.load(sys.stdin)
    # An http_proxy in the environment must not capture requests to the namespace's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    json.dump([fetch(opener, url) for url in urls], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
