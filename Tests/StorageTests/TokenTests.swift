import Foundation
import ReciprocityCore
import Storage
import TestSupport
import Testing

/// Signed link tokens: bound to their purpose and content, unforgeable, and (when asked) expiring.
@Suite struct TokenTests {
    let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000))
    var store: Store { Store(db: NoDatabase(), clock: clock, secret: Array(repeating: 3, count: 32)) }

    @Test func tamperingAndPurposeMixUpAreRefused() throws {
        let token = store.signToken(purpose: "unsubscribe", fields: ["1", "abc", "42"])
        #expect(store.verifyToken(token, purpose: "unsubscribe") == ["1", "abc", "42"])
        #expect(
            store.verifyToken(token, purpose: "preferences") == nil, "a token for one purpose is worthless for another")
        let parts = token.split(separator: ".").map(String.init)
        let otherPayload = Base64URL.encode(Array("1|abc|43".utf8))
        #expect(store.verifyToken(otherPayload + "." + parts[1], purpose: "unsubscribe") == nil, "changed content")
        #expect(store.verifyToken(parts[0] + ".AAAAAAAAAAAAAAAAAAAAAA", purpose: "unsubscribe") == nil)
        #expect(store.verifyToken("garbage", purpose: "unsubscribe") == nil)
        #expect(store.verifyToken(String(repeating: "a", count: 5000), purpose: "unsubscribe") == nil)
        #expect(try #require(Base64URL.decode(parts[1])).count == 16, "a 128-bit MAC")
        let other = Store(db: NoDatabase(), clock: clock, secret: Array(repeating: 4, count: 32))
        #expect(other.verifyToken(token, purpose: "unsubscribe") == nil, "another installation's secret")
    }

    @Test func expiringTokens() {
        let token = store.signToken(
            purpose: "review", fields: ["order", "7"], expiresAt: clock.now().addingTimeInterval(180 * 86_400))
        #expect(store.checkToken(token, purpose: "review") == .valid(["order", "7"]))
        clock.advance(by: 180 * 86_400 + 1)
        #expect(store.checkToken(token, purpose: "review") == .expired(["order", "7"]))
        #expect(store.checkToken(token + "x", purpose: "review") == .invalid)
        #expect(
            store.checkToken(store.signToken(purpose: "review", fields: ["no-expiry"]), purpose: "review") == .invalid)
    }

    @Test func base64URLRoundTrips() {
        for n in 0..<40 {
            let bytes = (0..<n).map { UInt8(($0 * 97 + n * 13) & 0xFF) }
            let encoded = Base64URL.encode(bytes)
            #expect(!encoded.contains("=") && !encoded.contains("+") && !encoded.contains("/"))
            #expect(Base64URL.decode(encoded) == bytes)
            let foundation = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(encoded == foundation)
        }
    }
}
