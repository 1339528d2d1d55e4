"""training block."""
