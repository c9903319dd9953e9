"""The torch implementations of the native node types, grouped by module."""
