"""Users (and later orgs and robots, in the same namespace table), credentials, tokens, permissions."""
