# safe-deploy: the image the action runs (action.yml `runs.image`, prebuilt by
# .github/workflows/release.yml for linux/amd64 and linux/arm64; users never compile).
#
# Build stage: the official Rust image on Alpine. Its toolchain targets *-unknown-linux-musl,
# which links statically by default, and the alpine3.23 variant already ships gcc + musl-dev
# (needed by ring's C/asm parts), so no apk packages are added here.
FROM rust:1.95-alpine3.23 AS build
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
WORKDIR /src
COPY . .
# /out is the final image's root file system:
#   usr/local/bin/safe-deploy        the binary (main step)
#   usr/local/bin/safe-deploy-post   symlink; argv[0] ending in -post selects the post step
#   tmp                              empty, world-writable with sticky bit (std::env::temp_dir)
# The readelf check fails the build if the binary asks for a dynamic loader (scratch has none).
# --no-default-features leaves out the `sandbox` feature (the emulators, demo, the provider
# double, the conformance suite): the action only deploys. bench/sizes prints both sizes.
RUN cargo build --release --locked --no-default-features \
    && mkdir -p /out/usr/local/bin /out/tmp \
    && chmod 1777 /out/tmp \
    && cp target/release/safe-deploy /out/usr/local/bin/safe-deploy \
    && ln -s safe-deploy /out/usr/local/bin/safe-deploy-post \
    && if readelf -lW /out/usr/local/bin/safe-deploy | grep -q 'program interpreter'; then \
           echo 'safe-deploy is dynamically linked; the scratch image cannot run it' >&2; exit 1; \
       fi

# Final stage: nothing but the static binary, its -post name and /tmp. TLS roots are compiled
# in (rustls + webpki roots), so no CA bundle is needed. No USER (the runner needs root to use
# the /github/* mounts), no WORKDIR (the runner forces --workdir /github/workspace), no CMD.
FROM scratch
# One COPY of the whole tree keeps the symlink a symlink and /tmp's 1777 mode.
COPY --from=build /out/ /
ENTRYPOINT ["/usr/local/bin/safe-deploy"]
