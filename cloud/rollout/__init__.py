"""Staged model rollouts: plans, gates, the pure decision core and its I/O shell."""
