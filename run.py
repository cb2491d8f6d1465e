"""WSGI entry point: ``gunicorn run:app`` or ``flask --app run.py ...``."""
from app import create_app
from app.jobs.worker import settle_process

app = create_app()
settle_process()  # the app lives as long as the process: out of the collector's full passes

if __name__ == "__main__":
    app.run()
