"""Subcommands of the `cuconv` CLI: each module has add_arguments(parser) and run(args)."""
