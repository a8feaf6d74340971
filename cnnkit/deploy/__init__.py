"""Exporting trained runs for deployment."""
