"""Helpers of the hostile-client suite (tests/test_hostile.py): raw HTTP, the control socket, log watching."""
