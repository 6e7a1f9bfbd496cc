"""attnloop."""
