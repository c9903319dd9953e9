"""Where attempts run: one interface, one implementation per kind of executor pool."""
