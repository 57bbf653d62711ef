"""Presence from calendar state: the pure view (state.py) and the node's hub of streams (hub.py)."""
