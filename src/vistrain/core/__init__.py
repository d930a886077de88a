"""Shared plumbing every stage may use: the consoles, atomic file writes and content digests, HTML templates."""
