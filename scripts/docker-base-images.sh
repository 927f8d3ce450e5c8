#!/usr/bin/env bash
# Makes local stand-ins for the base images the Dockerfiles name, for machines that cannot pull
# from a container registry (this project's CI). Each stand-in carries exactly the tag the
# Dockerfile's FROM line uses, so the Dockerfiles stay the ones a user with Docker Hub builds:
#
#   debian:bookworm-slim       debootstrap --variant=minbase bookworm, imported as an image, with
#                              the official image's apt sources and its "no docs" dpkg filter
#   rust:1.95-slim-bookworm    that + gcc, libc6-dev, pkg-config, ca-certificates and this
#                              machine's Rust 1.95.0 toolchain (no docs) laid out like the official
#                              image: RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo
#
# A tag that already exists is left alone (so on a machine that can pull, nothing happens). The
# debootstrapped root file system is cached as a tarball, so a second machine run is quick.
#
# Usage: scripts/docker-base-images.sh
# Env:   FERRUM_CACHE (default ~/.cache/ferrum-serve), DOCKER (default: Debian's /usr/bin/docker),
#        DEBIAN_MIRROR (default http://deb.debian.org/debian), RUST_TOOLCHAIN_DIR (default: the
#        1.95.0 toolchain under ~/.rustup, else the stable one if it is 1.95.0)
set -euo pipefail

DEBIAN_TAG=debian:bookworm-slim
RUST_TAG=rust:1.95-slim-bookworm
RUST_VERSION=1.95.0
TRIPLE=x86_64-unknown-linux-gnu

cache=${FERRUM_CACHE:-$HOME/.cache/ferrum-serve}/docker
docker=${DOCKER:-/usr/bin/docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf 'base-images: %s\n' "$*" >&2; }
have_image() { "$docker" image inspect "$1" >/dev/null 2>&1; }

make_debian() {
  local tarball="$cache/bookworm-minbase.tar"
  if [ ! -f "$tarball" ]; then
    local rootfs
    rootfs=$(mktemp -d)
    log "debootstrap bookworm (minbase) from $mirror: about a minute"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; rm -rf "$rootfs"; return 1; }
    # What the official slim image adds on top of a minimal bootstrap: deb822 sources with the
    # updates and security suites, no docs/man pages from later installs, and apt caches off.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    printf 'APT::Install-Recommends "false";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    mkdir -p "$cache"
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $tarball as $DEBIAN_TAG"
  "$docker" import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$DEBIAN_TAG" >/dev/null
}

toolchain_dir() {
  local dir
  for dir in "${RUST_TOOLCHAIN_DIR:-}" "$HOME/.rustup/toolchains/$RUST_VERSION-$TRIPLE" \
    "$HOME/.rustup/toolchains/stable-$TRIPLE"; do
    if [ -n "$dir" ] && [ -x "$dir/bin/rustc" ] &&
      "$dir/bin/rustc" --version | grep -q "^rustc $RUST_VERSION "; then
      readlink -f "$dir"
      return 0
    fi
  done
  log "no Rust $RUST_VERSION toolchain found (set RUST_TOOLCHAIN_DIR)"
  return 1
}

make_rust() {
  local src context
  src=$(toolchain_dir)
  context=$(mktemp -d)
  trap 'rm -rf "$context"' RETURN
  log "building $RUST_TAG from $DEBIAN_TAG + $src (docs left out)"
  mkdir -p "$context/rustup/toolchains" "$context/cargo/bin"
  # Hard links where possible: the toolchain is 700 MB without its docs.
  cp -al "$src" "$context/rustup/toolchains/$RUST_VERSION-$TRIPLE" 2>/dev/null ||
    cp -a "$src" "$context/rustup/toolchains/$RUST_VERSION-$TRIPLE"
  rm -rf "$context/rustup/toolchains/$RUST_VERSION-$TRIPLE/share/doc"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$RUST_VERSION-$TRIPLE" \
    >"$context/rustup/settings.toml"
  cp "$(command -v rustup || echo "$HOME/.cargo/bin/rustup")" "$context/cargo/bin/rustup"
  cat >"$context/Dockerfile" <<EOF
FROM $DEBIAN_TAG
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$RUST_VERSION
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev pkg-config \\
 && rm -rf /var/lib/apt/lists/*
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN cd /usr/local/cargo/bin \\
 && for tool in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-lldb; do ln -s rustup "\$tool"; done \\
 && chmod -R a+w /usr/local/rustup /usr/local/cargo \\
 && rustup --version && cargo --version && rustc --version
EOF
  DOCKER_BUILDKIT=1 "$docker" build -q -t "$RUST_TAG" "$context" >/dev/null
}

mkdir -p "$cache"
if have_image "$DEBIAN_TAG"; then log "$DEBIAN_TAG present"; else make_debian; fi
if have_image "$RUST_TAG"; then log "$RUST_TAG present"; else make_rust; fi
