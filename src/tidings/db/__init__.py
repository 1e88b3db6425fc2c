"""Database layer: engine, sessions, declarative base, column types and migrations."""
