"""A "server" that reads its stdin and never answers `initialize` (llm-relay's tool tests)."""

import sys

for _ in sys.stdin:
    pass
