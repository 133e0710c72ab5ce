FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml ./
COPY tracker ./tracker
COPY api ./api
COPY client ./client
COPY manage.py ./
RUN pip install --no-cache-dir . ./client && python manage.py collectstatic --noinput -v 0
RUN useradd --create-home tracker && mkdir -p /app/var && chown tracker /app/var
USER tracker
EXPOSE 8000
CMD ["gunicorn", "tracker.wsgi", "-c", "python:tracker.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", "--timeout", "120"]
