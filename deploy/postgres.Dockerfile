# PostgreSQL 15 for the hwnas stack, from Debian's packages on the same debootstrap base as
# hwnas:latest (no Docker Hub image). deploy/postgres-entrypoint.sh creates, on an empty data
# volume, the service's role (owner of database hwnas, not a superuser) and the dashboard's
# SELECT-only role, with passwords read from the environment.
ARG BASE=hwnas-base:bookworm
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 tini \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p "$PGDATA" /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql \
    && chmod 0700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/hwnas-postgres
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hwnas-postgres"]
