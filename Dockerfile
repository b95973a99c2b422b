# One image for the six services; compose.yaml picks the binary per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light php-fpm php-cli php-mysql zstd ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /src/target/release/installer /src/target/release/migrator \
     /src/target/release/backupper /src/target/release/webconf /src/target/release/dbprov /usr/local/bin/
COPY platforms/example /srv/platforms/example
ENV HOSTING_WEBCONF_DIR=/var/lib/hosting/webconf
