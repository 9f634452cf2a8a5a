#!/usr/bin/env bash
# Installs what building Sluice needs on a fresh Debian machine with Rust:
# cmake (pingora builds zlib-ng with it), curl and openssl (TLS tests),
# redis-server (tests/cluster_redis.rs), dnsmasq (tests/discovery_dns.rs; the
# -base package: the binary without a system service taking port 53), and the
# rustfmt/clippy components.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v dnsmasq >/dev/null || PATH="$PATH:/usr/sbin" command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "prereqs: installing ${need_apt[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
echo "prereqs: ok ($(cmake --version | head -1), $(cargo --version))" >&2
