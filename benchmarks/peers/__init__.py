"""Wrappers around the peer libraries' losses, imported lazily: a missing peer is skipped and recorded."""
