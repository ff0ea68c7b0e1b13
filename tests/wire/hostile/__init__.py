"""Helpers of the hostile-client suite (tests/wire/test_hostile.py): raw HTTP, control socket, logs."""
