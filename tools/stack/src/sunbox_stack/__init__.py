"""Sunbox test stack: the real servers, provisioned and started for tests."""
