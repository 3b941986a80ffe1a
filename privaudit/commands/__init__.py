"""Subcommands of the privaudit CLI, one module each (each exposes `register(subparsers)`)."""
