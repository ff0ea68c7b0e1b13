"""Outbound campaigns: a list of numbers dialled through the `Dialer` (outbound/dialer.py), durably, within
calling hours, paced, off the do-not-call list, and never taking the share kept for inbound calls."""
