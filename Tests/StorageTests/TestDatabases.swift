import Foundation
import TestSupport
import Testing

extension Engine: CustomTestStringConvertible {
    public var testDescription: String { rawValue }
}

@Suite struct EngineAvailability {
    /// CI must run the storage suite on both engines; locally PostgreSQL is optional.
    @Test func postgresIsConfiguredInCI() {
        if ProcessInfo.processInfo.environment["CI"] != nil {
            #expect(Engine.postgresAdminURL != nil, "CI must set RECIPROCITY_TEST_POSTGRES_URL")
        }
    }
}
