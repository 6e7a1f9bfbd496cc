"""Prefect flows: thin wrappers over attnloop's core functions (see each module)."""
