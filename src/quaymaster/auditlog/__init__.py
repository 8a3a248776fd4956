"""Action logs: who did what to which repository, with Quay's log kind names."""
