"""report block."""
