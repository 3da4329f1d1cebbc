"""What Retag does, as plain functions called by views, the API, tasks and commands."""
