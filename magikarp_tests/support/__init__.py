"""Test support: local stand-ins for the outside world (fake market API) and small worlds of real
sample sessions (world.py)."""
