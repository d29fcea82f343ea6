# Multi-stage build: a small runtime image running as a non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
# The query macros compile against .sqlx/ (SQLX_OFFLINE in .cargo/config.toml).
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY config config
# The OpenAPI document is compiled into the binary (GET /openapi.json).
COPY contracts contracts
# Cargo.toml declares the benchmark target; cargo wants its source present.
COPY benches benches
COPY testkit testkit
RUN cargo build --release --locked --bin identity-reconciler

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home reconciler
COPY --from=build /src/target/release/identity-reconciler /usr/local/bin/identity-reconciler
USER 10001
ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["identity-reconciler"]
CMD ["run"]
