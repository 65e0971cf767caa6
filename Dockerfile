FROM python:3.11-slim
WORKDIR /srv/bulwark
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir -e .
USER nobody
EXPOSE 8080
CMD ["bulwark", "serve", "--host", "0.0.0.0"]
