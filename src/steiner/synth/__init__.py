"""Data synthesis: teachers, method one (random truncation) and method two (DAGs of steps)."""
