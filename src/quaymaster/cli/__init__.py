"""The `quaymaster` command: one module per subcommand."""
