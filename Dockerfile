FROM python:3.11-slim
WORKDIR /srv/bulwark
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/bulwark bulwark \
    && install -d -o bulwark -g bulwark -m 0750 /var/lib/bulwark
# The data folder (SQLite, generated key, filesystem repositories) survives the container.
VOLUME /var/lib/bulwark
ENV BULWARK_DATA_DIR=/var/lib/bulwark
USER bulwark
EXPOSE 8080
CMD ["bulwark", "serve", "--host", "0.0.0.0"]
