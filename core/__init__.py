"""Shared kit: settings, database, Redis, errors, logging, money and time helpers."""
