"""The error every subcommand raises for a command line it cannot act on (exit status 2)."""


class UsageError(Exception):
    """The command line cannot be acted on."""
