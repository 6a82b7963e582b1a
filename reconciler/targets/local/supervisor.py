"""The entry point of a run's supervisor: ``python -I -S supervisor.py RUN_DIR``.

The work is done by `supervision` in this directory, imported as a top-level module so
that its cached bytecode is used: compiling it as the main script would add ~5 ms to
every dispatch. Like `supervision`, this imports only the standard library.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # after the stdlib
    supervision = __import__("supervision")
    code = supervision.main(sys.argv)
    sys.stderr.flush()
    os._exit(code)  # nothing is left to clean up; skip the interpreter's teardown
