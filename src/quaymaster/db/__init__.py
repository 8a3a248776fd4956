"""Database engine, sessions, declarative base and migrations (SQLite embedded, PostgreSQL in production)."""
