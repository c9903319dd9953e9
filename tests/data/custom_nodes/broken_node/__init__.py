"""A custom node package that fails to import, for the install step's tests."""

raise RuntimeError("broken_node is broken on purpose")
