"""Calls the daemon places: dialling one number (dialer.py), and what a campaign needs from it."""
