"""Contract tests against the genuine agent CLIs (a package, so its conftest does not shadow tests/conftest.py)."""
