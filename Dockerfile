# Ferrum Serve: the API server (and the mock feature store) in a slim Debian image, plus a
# training target that reproduces the committed models.
#
#   make image                     # = the build below, tagged ferrum-serve:<short commit>
#   DOCKER_BUILDKIT=1 docker build \
#     --build-arg GIT_COMMIT=$(git rev-parse HEAD) --build-arg IMAGE_TAG=$(git rev-parse --short HEAD) \
#     [--secret id=cabundle,src=/etc/ssl/certs/ca-certificates.crt] -t ferrum-serve:TAG .
#   docker build --target train -t ferrum-serve-train:TAG .     # then: docker run -v $PWD/out:/out ...
#
# BuildKit is required (RUN --mount). The optional `cabundle` secret is a CA bundle for networks
# whose HTTPS goes through an intercepting proxy: cargo and pip trust it during the build only;
# it is never written to a layer, and without it nothing changes. See docs/containers.md.

# --- ONNX Runtime's shared library from the pinned, hash-checked PyPI wheel --------------------
FROM debian:bookworm-slim AS python-tools
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's own python3 and pip; their versions follow the bookworm point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM python-tools AS onnxruntime
WORKDIR /build
COPY scripts/fetch-onnxruntime.sh scripts/
# The script checks the wheel's and the library's sha256: every image loads the very bytes the
# tests on the host load.
RUN --mount=type=secret,id=cabundle \
    --mount=type=cache,id=ferrum-wheels,target=/root/.cache/ferrum-serve \
    if [ -f /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
 && PIP_DISABLE_PIP_VERSION_CHECK=1 scripts/fetch-onnxruntime.sh /opt/onnxruntime

# --- manifest.json stamped with the commit and tag of this build --------------------------------
FROM python-tools AS release
WORKDIR /build
COPY manifest.json .
COPY scripts/release-manifest.py scripts/
ARG GIT_COMMIT=unknown
ARG IMAGE_TAG=dev
RUN python3 scripts/release-manifest.py manifest.json /build/release-manifest.json \
      --git-commit "$GIT_COMMIT" --image-tag "$IMAGE_TAG"

# --- the binaries --------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# cargo-cyclonedx writes the image's SBOM (below). Pinned, from crates.io, in a layer of its own
# that only changes with the version.
ARG CARGO_CYCLONEDX_VERSION=0.5.9
RUN --mount=type=secret,id=cabundle \
    --mount=type=cache,id=ferrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    if [ -f /run/secrets/cabundle ]; then export CARGO_HTTP_CAINFO=/run/secrets/cabundle; fi \
 && cargo install --locked --quiet --version "$CARGO_CYCLONEDX_VERSION" cargo-cyclonedx \
 && cargo cyclonedx --version
# Dependencies first, against stand-in sources: this layer only changes with Cargo.toml or
# Cargo.lock. The cache mounts keep the registry and compiled dependencies between builds too.
COPY Cargo.toml Cargo.lock build.rs ./
# build.rs generates the gRPC code from proto/ (protox, no protoc), in this layer too.
COPY proto proto
COPY scripts/cargo-stub-targets.sh scripts/
RUN --mount=type=secret,id=cabundle \
    --mount=type=cache,id=ferrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=ferrum-target-cpu,target=/src/target,sharing=locked \
    if [ -f /run/secrets/cabundle ]; then export CARGO_HTTP_CAINFO=/run/secrets/cabundle; fi \
 && scripts/cargo-stub-targets.sh \
 && cargo build --release --locked --bins
COPY src src
# The demo page is compiled into the binary (include_str!).
COPY web web
# build.rs bakes GIT_COMMIT into the binary (there is no .git in the build context). Declared
# after the dependency layer so a new commit does not rebuild the dependencies.
ARG GIT_COMMIT=unknown
# COPY keeps the files' old timestamps: touch them so cargo does not reuse the stand-ins.
# The image's binaries drop the line tables the release profile keeps (symbols stay, so a
# backtrace still names functions): about half their size.
# The SBOM: every crate compiled into the binaries for this platform (CycloneDX 1.5 JSON, from
# Cargo.lock via cargo metadata; it may fetch the dev-dependencies' manifests).
RUN --mount=type=secret,id=cabundle \
    --mount=type=cache,id=ferrum-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=ferrum-target-cpu,target=/src/target,sharing=locked \
    if [ -f /run/secrets/cabundle ]; then export CARGO_HTTP_CAINFO=/run/secrets/cabundle; fi \
 && find src -type f -exec touch {} + \
 && GIT_COMMIT="$GIT_COMMIT" cargo build --release --locked --bins \
 && mkdir -p /out/bin \
 && find target/release -maxdepth 1 -type f -perm -u+x -name 'ferrum-*' -exec cp {} /out/bin/ \; \
 && strip --strip-debug /out/bin/* \
 && ls -l /out/bin && test -x /out/bin/ferrum-serve \
 && cargo cyclonedx --all --format json --spec-version 1.5 \
      --target x86_64-unknown-linux-gnu \
 && mv ferrum-serve.cdx.json /out/sbom.cdx.json

# --- training: python training/train.py --out /out reproduces models/ byte for byte ------------
FROM python-tools AS train
WORKDIR /opt/ferrum
COPY requirements/train.lock requirements/
RUN --mount=type=secret,id=cabundle \
    --mount=type=cache,id=ferrum-pip,target=/root/.cache/pip \
    if [ -f /run/secrets/cabundle ]; then export PIP_CERT=/run/secrets/cabundle; fi \
 && python3 -m venv /opt/venv \
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install --require-hashes --no-deps \
      -r requirements/train.lock
COPY training training
RUN useradd -l -r -u 10001 -d /nonexistent -s /usr/sbin/nologin ferrum \
 && mkdir -p /out && chown 10001:10001 /out
USER 10001:10001
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["python", "training/train.py"]
CMD ["--out", "/out"]

# --- the runtime image (the default target) -----------------------------------------------------
FROM debian:bookworm-slim AS runtime
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN useradd -l -r -u 10001 -d /nonexistent -s /usr/sbin/nologin ferrum
COPY --from=onnxruntime /opt/onnxruntime /usr/local/lib/onnxruntime
COPY --from=builder /out/bin/ /usr/local/bin/
# Debian's CA bundle (no apt in this stage): rustls reads it to verify https:// object
# storage for a remote --models-dir (docs/object-storage.md).
COPY --from=python-tools /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
WORKDIR /srv/ferrum
COPY models models
# The CycloneDX SBOM of the binaries, at the path /manifest names (`build.sbom`).
COPY --from=builder /out/sbom.cdx.json /usr/share/doc/ferrum-serve/sbom.cdx.json
COPY --from=release /build/release-manifest.json manifest.json
# What changes with every commit comes last, so the layers above stay cached.
ARG GIT_COMMIT=unknown
ARG IMAGE_TAG=dev
LABEL org.opencontainers.image.title="ferrum-serve" \
      org.opencontainers.image.description="Reproducible ONNX model serving over HTTP, with the mock feature store" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.version="${IMAGE_TAG}"
ENV HOST=0.0.0.0 \
    PORT=8080 \
    MODELS_DIR=/srv/ferrum/models \
    MANIFEST_PATH=/srv/ferrum/manifest.json \
    ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so \
    LOG_FORMAT=json \
    SBOM_PATH=/usr/share/doc/ferrum-serve/sbom.cdx.json \
    IMAGE_TAG=${IMAGE_TAG}
USER 10001:10001
EXPOSE 8080
# The binary probes its own /health/ready on $PORT (the image has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["ferrum-serve", "--healthcheck"]
# The server by default; `docker run --entrypoint ferrum-feature-store IMAGE` runs the mock
# feature store from the same image, and `docker run IMAGE <subcommand>` the server's other jobs.
ENTRYPOINT ["ferrum-serve"]
