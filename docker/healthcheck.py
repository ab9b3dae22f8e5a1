#!/usr/bin/env python3
"""Container health check: exit 0 when ``GET URL`` answers 200 within 4 s, else 1.

URL defaults to the API's liveness endpoint, ``http://127.0.0.1:$INSID3_PORT/healthz``.
"""

import os
import sys
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('INSID3_PORT', '8000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"insid3-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
