"""State store: SQLAlchemy models and Alembic migrations.

SQLite locally, PostgreSQL in production.
"""
