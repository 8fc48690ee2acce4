"""One file per command: `main(argv)` parses the command line, `run(...)` is the flow, top to bottom.

Each module is cheap to import (no torch, no Ray): `launcher COMMAND --help` and config mistakes
answer in well under a second; the flows import the heavy parts once the checks have passed.
"""
