#!/usr/bin/env bash
# tcmalloc (Debian libtcmalloc-minimal4): the CLI and the worker re-execute themselves with it preloaded when it is
# installed (src/Engine/NativeAllocator.cs); the allocator tests check that path. Idempotent. .ci/run evals stdout,
# so stdout carries only variable assignments; every log line goes to stderr.
set -euo pipefail
lib=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [ ! -e "$lib" ]; then
  echo "tcmalloc.sh: installing libtcmalloc-minimal4" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 || true
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends libtcmalloc-minimal4 >&2 || true
fi
if [ -e "$lib" ]; then
  echo "tcmalloc.sh: $lib" >&2
else
  echo "tcmalloc.sh: libtcmalloc-minimal4 could not be installed; the preload tests will be skipped" >&2
fi
