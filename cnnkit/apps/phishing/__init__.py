"""Phishing-screenshot detection: what is specific to the flagship application (capture, demo data)."""
