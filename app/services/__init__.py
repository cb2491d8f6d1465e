"""Domain services: every business rule lives here, views and jobs only adapt."""
