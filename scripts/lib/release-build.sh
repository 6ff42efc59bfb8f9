# shellcheck shell=bash
# The one release build of the benchmarks and of production (docs/operations.md, "Production build").
#
# The Swift standard library and Foundation are linked statically (`--static-swift-stdlib`); Package.swift adds
# the release link flags. Every script builds with the same flags. When they change, remove .build/*/release first:
# the Swift driver does not count a frontend flag as a change (decision 0015).
#   source scripts/lib/release-build.sh
#   release_build [--product reciprocity]   # swift build -c release --static-swift-stdlib ...
#   BIN="$(release_bin_path)/reciprocity"

# Every function in its own section (Swift and C), so that the linker can place the functions a server touches at
# start-up next to each other (Package.swift, `--symbol-ordering-file`; decision 0015).
RELEASE_BUILD_FLAGS=(-c release --static-swift-stdlib -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections)

release_build() { swift build "${RELEASE_BUILD_FLAGS[@]}" "$@"; }

release_bin_path() { swift build "${RELEASE_BUILD_FLAGS[@]}" --show-bin-path; }

# release_bin_check BIN: warn when BIN is not the static release build (a stale dynamic binary shares .build/release,
# and would measure about 10 MiB more idle memory).
release_bin_check() {
    if readelf -d "$1" 2>/dev/null | grep -q 'libswiftCore'; then
        echo "warning: $1 links the Swift runtime dynamically; it is not the release build of" \
            "scripts/lib/release-build.sh (rebuild without NO_BUILD / --no-build)" >&2
    fi
}
