"""Tests against the real annotation tools (`make test-live`); excluded from `make test`."""
