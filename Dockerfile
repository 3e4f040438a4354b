# The gitfleet agent as a container image: built with the official Rust image, run on
# distroless (glibc, OpenSSL 3 and CA certificates; no shell, no package manager).
#
#   docker build -t gitfleet .
#   docker run -d --name gitfleet --restart unless-stopped \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/gitfleet:/var/lib/gitfleet \
#     -v /etc/gitfleet:/etc/gitfleet:ro \
#     gitfleet agent --config /etc/gitfleet/agent.toml
#
# Mount the state directory at the same path inside and outside: Compose bind mounts and
# secrets are materialized there and handed to the host's engine by that path.
# docs/packaging.md has the details; tests/dockerfile.rs builds and runs this file.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gitfleet \
    && strip target/release/gitfleet

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/gitfleet /usr/local/bin/gitfleet
ENV GITFLEET_STATE_DIR=/var/lib/gitfleet \
    GITFLEET_LISTEN=0.0.0.0:9469
VOLUME ["/var/lib/gitfleet"]
EXPOSE 9469
ENTRYPOINT ["/usr/local/bin/gitfleet"]
CMD ["agent", "--help"]
