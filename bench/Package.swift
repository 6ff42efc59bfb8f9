// swift-tools-version:6.2
import Foundation
import PackageDescription

// A path dependency is known by its folder's name, which depends on where the repository was cloned.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

// In-process benchmarks (ordo-one/benchmark). Run from this folder:
//   swift package --disable-sandbox benchmark
// HTTP-level figures come from ../scripts/bench-http.sh (wrk), which compares against the bare 302 route and nginx.
let package = Package(
    name: "reciprocity-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "OrderPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ReciprocityKit", package: root),
            ],
            path: "Benchmarks/OrderPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
