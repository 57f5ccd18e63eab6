"""Presence: who is online, away, busy or in a call, across every node."""
