"""Golden frames of the v1 wire protocol (``*.json`` here; see README.md)."""
