"""Test support: local stand-ins for the outside world (market data APIs) that tests can script."""
