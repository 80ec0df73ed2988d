"""Attack suite (being written)."""
