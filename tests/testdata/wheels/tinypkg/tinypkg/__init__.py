"""A tiny package for the virtualenv tests: `main` prints its argv and returns 3."""

import json
import sys


def main() -> int:
    print(json.dumps({"argv": sys.argv, "prefix": sys.prefix}))
    return 3
