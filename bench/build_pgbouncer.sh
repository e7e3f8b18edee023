#!/usr/bin/env bash
# Build PgBouncer 1.24.1 (Debian's source tarball, checked by its SHA-256) for the
# bench's pgbouncer-prepared profile: Debian 12 ships 1.18, which predates
# max_prepared_statements (1.21), so behind it every hot read is parsed and planned
# on each execution. Prints the binary's path; pass it as --pgbouncer-binary.
#   bench/build_pgbouncer.sh [PREFIX]      (default: $TMPDIR/pgbouncer-1.24.1)
set -euo pipefail
version=1.24.1
sha256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
prefix="${1:-${TMPDIR:-/tmp}/pgbouncer-$version}"
if [[ -x "$prefix/bin/pgbouncer" ]]; then echo "$prefix/bin/pgbouncer"; exit 0; fi
missing=()
for pkg in libevent-dev libssl-dev pkg-config make gcc; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tarball="pgbouncer_${version}.orig.tar.gz"
curl -sSf -o "$work/$tarball" "http://deb.debian.org/debian/pool/main/p/pgbouncer/$tarball"
echo "$sha256  $work/$tarball" | sha256sum -c --quiet -
tar -xzf "$work/$tarball" -C "$work"
(
    cd "$work/pgbouncer-$version"
    ./configure --prefix="$prefix" >&2
    make -j"$(nproc)" >&2
    make install >&2
)
echo "$prefix/bin/pgbouncer"
