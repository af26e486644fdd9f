# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run from a slim Debian image as a non-root user.
# rustls only (ring), so the runtime image needs CA certificates but no OpenSSL.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The commit otpd_build_info names; the image has no .git to ask:
#   docker build --build-arg OTPD_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG OTPD_COMMIT=""
# Build the dependencies first so that source changes reuse this layer.
COPY Cargo.toml Cargo.lock build.rs ./
# The workspace's client crate: cargo reads its manifest even to build otpd alone.
COPY clients/rust clients/rust
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --profile dist --locked && rm -rf src
# Everything the build reads: sources, migrations (sqlx::migrate!), and the files compiled in
# with include_str! (config/, docs/). `.ci/run` checks this list against the code.
COPY src src
COPY migrations migrations
COPY config config
COPY docs docs
RUN touch src/main.rs src/lib.rs && cargo build --profile dist --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin otpd
COPY --from=build /src/target/dist/otpd /usr/local/bin/otpd
COPY config/default.toml /etc/otpd/default.toml.example
COPY LICENSE /usr/share/doc/otpd/LICENSE
USER 10001:10001
ENV OTPD__HTTP__LISTEN=0.0.0.0:9464 \
    OTPD__LOG__FORMAT=json
EXPOSE 9464
# Ready when the broker, the database and intake answer; `otpd healthcheck` asks /readyz, since
# the slim image has no HTTP client. Orchestrators can probe GET /readyz on port 9464 directly.
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/otpd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/otpd"]
CMD ["run"]
