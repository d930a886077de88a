"""Shared plumbing every layer may use: the consoles, atomic file writes and content digests, HTML templates."""
