// swift-tools-version:6.2
import PackageDescription

// Strict concurrency comes with the Swift 6 language mode; these upcoming features keep imports honest.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

// The release executable's link on Linux (docs/decisions/0009-release-link.md): lld, relative relocations packed
// (DT_RELR, glibc >= 2.36), and no dynamic symbol table for the statically linked standard library. With
// `--static-swift-stdlib` this takes the idle RSS from about 50 MiB to 38-39 MiB: the dynamic linker no longer reads
// 3.3 MiB of relocations and 2.2 MiB of exported symbols at every start.
// The functions a server calls at start-up and on its first requests go first, in the order of their first call
// (decision 0015): scripts/release/symbol-order.sh records the list, and the release build compiles every function
// into its own section (scripts/lib/release-build.sh) so that the linker can move it.
let symbolOrder = Context.packageDirectory + "/scripts/release/symbol-order.txt"
let releaseLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(
        [
            "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic",
            "-Xlinker", "--symbol-ordering-file=\(symbolOrder)", "-Xlinker", "--no-warn-symbol-ordering",
        ],
        .when(platforms: [.linux], configuration: .release)),
]

let package = Package(
    name: "reciprocity",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "reciprocity", targets: ["reciprocity"]),
        // For the benchmark package in bench/ (and other tools that embed the core and storage).
        .library(name: "ReciprocityKit", targets: ["ReciprocityCore", "Storage", "StorageSQLite", "StoragePostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Pure domain: values, rules, policies. Foundation only.
        .target(name: "ReciprocityCore", resources: [.copy("Resources")], swiftSettings: swiftSettings),
        // The storage contract, portable SQL, migrations and repositories written once.
        .target(
            name: "Storage",
            dependencies: [
                "ReciprocityCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "StorageSQLite",
            dependencies: ["Storage", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "StoragePostgres",
            dependencies: [
                "Storage",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Mail as bytes: addresses (IDNA), RFC 2047 headers, MIME, quoted-printable/base64, DKIM. No I/O.
        .target(
            name: "Mail",
            dependencies: [
                "ReciprocityCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Our SMTP client on SwiftNIO: STARTTLS/implicit TLS, AUTH, PIPELINING, timeouts, a connection pool.
        .target(
            name: "SMTP",
            dependencies: [
                "ReciprocityCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The mail pipeline: templates, composing, the outbox, delivery policy at send time, bounces.
        .target(
            name: "Messaging",
            dependencies: [
                "ReciprocityCore", "Storage", "Mail", "SMTP",
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            resources: [.copy("MailTemplates")],
            swiftSettings: swiftSettings
        ),
        // Durable job queue and scheduler on top of the storage contract.
        .target(
            name: "Jobs",
            dependencies: [
                "ReciprocityCore", "Storage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Reviews (issue 4): asking at the right time, verified reviews through signed links, moderation,
        // widgets, JSON-LD and the Google feed.
        .target(
            name: "Reviews",
            dependencies: [
                "ReciprocityCore", "Storage", "Messaging",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Lead magnets (issue 5): gifts for contact data, double opt-in with proof, voucher pools, samples,
        // the follow-up sequence, landing pages.
        .target(
            name: "LeadMagnets",
            dependencies: [
                "ReciprocityCore", "Storage", "Messaging",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Kunden werben Kunden: advocates, attribution, fraud checks, the reward lifecycle, payouts.
        .target(
            name: "Referrals",
            dependencies: [
                "ReciprocityCore", "Storage", "Messaging",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // HTTP adapters: JSON API, admin pages, public pages.
        .target(
            name: "Web",
            dependencies: [
                "ReciprocityCore", "Storage", "Jobs", "Mail", "Messaging", "Reviews", "LeadMagnets", "Referrals",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            resources: [.copy("Templates"), .copy("OpenAPI")],
            swiftSettings: swiftSettings
        ),
        // Wiring: configuration, engine choice, buildApplication, commands as functions.
        .target(
            name: "App",
            dependencies: [
                "ReciprocityCore", "Storage", "StorageSQLite", "StoragePostgres", "Jobs", "Web", "Mail", "SMTP",
                "Messaging", "Reviews", "LeadMagnets", "Referrals",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "reciprocity",
            dependencies: ["App", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings,
            linkerSettings: releaseLinkerSettings
        ),
        // Test harness shared by the test targets: fresh databases on each engine, sample bodies.
        .target(
            name: "TestSupport",
            dependencies: ["ReciprocityCore", "Storage", "StorageSQLite", "StoragePostgres"],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ReciprocityCoreTests", dependencies: ["ReciprocityCore"], exclude: ["Fixtures"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "StorageTests",
            dependencies: ["ReciprocityCore", "Storage", "StorageSQLite", "StoragePostgres", "Jobs", "App", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MailTests",
            dependencies: [
                "ReciprocityCore", "Storage", "Mail", "SMTP", "Messaging", "TestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["__Snapshots__", "Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ReviewTests",
            dependencies: [
                "ReciprocityCore", "Storage", "Messaging", "Reviews", "Jobs", "App", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LeadTests",
            dependencies: ["ReciprocityCore", "Storage", "Messaging", "LeadMagnets", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ReferralTests",
            dependencies: ["ReciprocityCore", "Storage", "Messaging", "Referrals", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WebTests",
            dependencies: [
                "App", "Web", "Storage", "ReciprocityCore", "Reviews", "Referrals", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["__Snapshots__"],
            swiftSettings: swiftSettings
        ),
    ]
)
