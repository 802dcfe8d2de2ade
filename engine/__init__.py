"""pressor engine."""
