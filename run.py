"""WSGI entry point: ``gunicorn run:app`` or ``flask --app run.py ...``."""
from app import create_app

app = create_app()

if __name__ == "__main__":
    app.run()
