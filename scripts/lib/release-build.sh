# shellcheck shell=bash
# The one release build of the benchmarks and of production (docs/operations.md, "Production build").
#
# The Swift standard library and Foundation are linked statically (`--static-swift-stdlib`); Package.swift adds
# the release link flags. Every script builds with the same flags: SwiftPM rebuilds everything when they change.
#   source scripts/lib/release-build.sh
#   release_build [--product reciprocity]   # swift build -c release --static-swift-stdlib ...
#   BIN="$(release_bin_path)/reciprocity"

RELEASE_BUILD_FLAGS=(-c release --static-swift-stdlib)

release_build() { swift build "${RELEASE_BUILD_FLAGS[@]}" "$@"; }

release_bin_path() { swift build "${RELEASE_BUILD_FLAGS[@]}" --show-bin-path; }
