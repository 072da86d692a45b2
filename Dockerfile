# syntax=docker/dockerfile:1
# The relay's container image: the relay (`noc`, the entrypoint), and the other programs
# of the project for load-test campaigns and trials (`ves-agent`, `noc-device`,
# `loadtest`). Build: `docker build -t noc .` (or podman/buildah).
#
# Debian packages are not pinned (DL3008): the stable release's security updates replace
# versions, and a pin would make the build fail instead of picking them up.

ARG RUST_VERSION=1.89
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN} AS build
# OpenSSL and zlib headers: the endpoints' crypto (the relay itself links neither).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/image-build.sh /out

FROM debian:${DEBIAN}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="noc" \
      org.opencontainers.image.description="Carrier-grade push relay NOC" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/noc-relay"
# CA certificates for PostgreSQL, Redis and SMTP over TLS; libssl for the endpoints.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/noc --no-create-home noc \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/noc
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/noc
EXPOSE 8443 8444 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["noc", "health"]
ENTRYPOINT ["noc"]
CMD ["serve", "--data-dir", "/var/lib/noc", "--admin-listen", "0.0.0.0:9090"]
