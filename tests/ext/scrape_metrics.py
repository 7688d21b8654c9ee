#!/usr/bin/env python3
"""Scrapes a Prometheus endpoint and parses it the way Prometheus's own Python client does.

    scrape_metrics.py URL

Fetches URL, parses the text format with prometheus_client.parser, and prints one JSON object:
{"families": {NAME: TYPE}, "samples": [{"name", "labels", "value"}]}. Exits 1 when the fetch
fails or the text does not parse (the reason on stderr), 2 on a usage error.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[1], timeout=30) as response:
            content_type = response.headers.get("Content-Type", "")
            text = response.read().decode("utf-8")
    except Exception as err:  # noqa: BLE001 - any failure is reported the same way
        print(f"cannot fetch {argv[1]}: {err}", file=sys.stderr)
        return 1
    if not content_type.startswith("text/plain"):
        print(f"unexpected Content-Type {content_type!r}", file=sys.stderr)
        return 1
    families = {}
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            for sample in family.samples:
                samples.append(
                    {"name": sample.name, "labels": sample.labels, "value": sample.value}
                )
    except Exception as err:  # noqa: BLE001
        print(f"the text does not parse: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"families": families, "samples": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
