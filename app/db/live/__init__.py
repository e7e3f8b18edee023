"""Live migration: sync SQLite and PostgreSQL while serving, cut over, switch back."""
