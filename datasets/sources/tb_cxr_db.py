"""Placeholder until its loader lands."""
