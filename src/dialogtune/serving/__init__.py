"""serving block."""
