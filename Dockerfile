# syntax=docker/dockerfile:1
# regate's image: built with the Rust toolchain, run on distroless (glibc and libgcc, no
# shell, no package manager) as a non-root user.
#   docker build -t regate .        or        docker compose build
#   docker run --rm regate --help

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the build reads; .dockerignore keeps everything else (config/certs with its
# keys, target/, .git) out of the build context.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/regate /out/regate \
    && mkdir -p /out/data

# Debian 12 like the builder, so the glibc regate was linked against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/regate /regate
# data_dir. A named volume mounted here starts with this owner, so regate can write it.
COPY --from=build --chown=65532:65532 /out/data /data
# distroless's `nonroot`, by number so that runtimes can tell it is not root.
USER 65532:65532
EXPOSE 443 80
ENTRYPOINT ["/regate"]
CMD ["serve", "--config", "/config/regate.yml"]
