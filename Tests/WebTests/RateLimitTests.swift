import Foundation
import HummingbirdTesting
import ReciprocityCore
import Storage
import TestSupport
import Testing

@testable import Web

/// The token buckets that slow guessing and form abuse: all or nothing across keys, no reset of every bucket when
/// the table is full, clients counted by network.
@Suite struct RateLimits {
    @Test func takingFromSeveralBucketsIsAllOrNothing() {
        let clock = ManualClock()
        let limiter = RateLimiter(capacity: 2, refillPerSecond: 0, clock: clock)
        #expect(limiter.take(["ip:a", "account:x"]))
        #expect(limiter.take(["ip:b", "account:x"]))
        // The account is empty: the address's bucket keeps its token.
        #expect(!limiter.take(["ip:a", "account:x"]))
        #expect(limiter.take(["ip:a", "account:y"]))
        #expect(!limiter.take(["ip:a", "account:z"]))
        limiter.giveBack(["ip:a"])
        #expect(limiter.take(["ip:a", "account:z"]))
    }

    /// A burst from many tasks at once takes exactly the bucket's tokens.
    @Test func aBurstTakesNoMoreThanTheCapacity() async {
        let limiter = RateLimiter(capacity: 5, refillPerSecond: 0, clock: ManualClock())
        let granted = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<200 { group.addTask { limiter.take(["ip:a", "account:owner"]) } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(granted == 5)
    }

    /// Filling the table with fresh keys does not hand an attacked key that is still being tried a fresh bucket:
    /// full buckets go first, and the rest only down to nine tenths, the longest untouched first.
    @Test func aFullTableEvictsFullBucketsNotTheAttackedOne() {
        let clock = ManualClock()
        let limiter = RateLimiter(capacity: 3, refillPerSecond: 1.0 / 60, clock: clock, maxKeys: 10)
        for key in (0..<8).map({ "old:\($0)" }) { #expect(limiter.take([key])) }
        clock.advance(by: 600)  // the old buckets are full again
        for _ in 0..<3 { #expect(limiter.take(["account:victim"])) }
        for key in (0..<20).map({ "new:\($0)" }) {
            clock.advance(by: 1)
            _ = limiter.take([key])
            #expect(!limiter.take(["account:victim"]), "still limited after \(key)")
        }
    }

    @Test func clientsAreCountedByAddressAndIPv6ByNetwork() {
        #expect(WebEnvironment.limiterKey(ip: "192.0.2.7") == "192.0.2.7")
        #expect(WebEnvironment.limiterKey(ip: "2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64")
        #expect(WebEnvironment.limiterKey(ip: "2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64")
        #expect(WebEnvironment.limiterKey(ip: "::ffff:192.0.2.7") == "192.0.2.7")
        #expect(WebEnvironment.limiterKey(ip: "not-an-address") == "not-an-address")
    }
}

extension AdminPages {
    /// A shop with its owner, and the login form's CSRF cookie and token.
    func loginForm(_ app: TestApp) async throws -> (cookie: String, token: String) {
        _ = try await seedShop(app)
        let page = try await app.request(.get, "/admin/login")
        let cookie = try #require(page.headers[values: .setCookie].first?.split(separator: ";").first.map(String.init))
        return (cookie, try #require(extract(page.text, after: "name=\"_csrf\" value=\"")))
    }

    /// Parallel wrong passwords: no more are checked than the limit allows, the rest are answered 429 at once.
    @Test func parallelLoginAttemptsStopAtTheLimit() async throws {
        try await TestApp.run { app in
            let (cookie, token) = try await loginForm(app)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<20 {
                    group.addTask {
                        try await app.request(
                            .post, "/admin/login", cookies: cookie,
                            form: "_csrf=\(token)&email=owner%40shop.example&password=wrong\(i)"
                        ).status.code
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 401 }.count == 5)
            #expect(statuses.filter { $0 == 429 }.count == 15)
            // The right password is limited too now; a successful login later gives its tokens back.
            let blocked = try await app.request(
                .post, "/admin/login", cookies: cookie,
                form: "_csrf=\(token)&email=owner%40shop.example&password=correct+horse+battery")
            #expect(blocked.status == .tooManyRequests)
        }
    }

    /// Someone failing logins to the owner's account from elsewhere uses up the account's limit, but not the limit
    /// of the owner's browser, which logged in before (its device cookie). A device cookie counts only for the
    /// account it was issued for, and only as issued.
    @Test func failuresFromElsewhereDoNotLockOutAKnownBrowser() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_790_000_000))
        try await TestApp.run(clock: clock) { app in
            let (csrfCookie, token) = try await loginForm(app)
            func attempt(_ password: String, device: String? = nil, email: String = "owner%40shop.example")
                async throws -> TestResponse
            {
                try await app.request(
                    .post, "/admin/login", cookies: [csrfCookie, device].compactMap { $0 }.joined(separator: "; "),
                    form: "_csrf=\(token)&email=\(email)&password=\(password)")
            }
            // The owner's browser logs in once and is given its device cookie.
            let first = try await attempt("correct+horse+battery")
            #expect(first.status == .seeOther)
            let setDevice = try #require(first.headers[values: .setCookie].first { $0.hasPrefix("rcp_device=") })
            #expect(
                setDevice.contains("HttpOnly") && setDevice.contains("SameSite=Strict")
                    && setDevice.contains("Path=/admin"))
            let device = String(setDevice.split(separator: ";")[0])
            // With it, a later login renews it: the same device id, a later expiry (the signed payload's fields:
            // address hash, device id, password tag, expiry).
            func fields(_ setCookie: String) throws -> [String] {
                let value = setCookie.split(separator: ";")[0].dropFirst("rcp_device=".count)
                let payload = try #require(Base64URL.decode(String(value.split(separator: ".")[0])))
                return String(decoding: payload, as: UTF8.self).split(separator: "|").map(String.init)
            }
            clock.advance(by: 60)
            let again = try await attempt("correct+horse+battery", device: device)
            #expect(again.status == .seeOther)
            let renewed = try #require(again.headers[values: .setCookie].first { $0.hasPrefix("rcp_device=") })
            let (before, after) = (try fields(setDevice), try fields(renewed))
            #expect(before.count == 4 && after.count == 4)
            #expect(after[1] == before[1] && Int(after[3])! == Int(before[3])! + 60)

            // Elsewhere: five wrong passwords, then even the right one is refused.
            for i in 0..<5 { #expect(try await attempt("wrong\(i)").status == .unauthorized) }
            #expect(try await attempt("correct+horse+battery").status == .tooManyRequests)
            // The known browser still gets in.
            #expect(try await attempt("correct+horse+battery", device: device).status == .seeOther)
            // An altered cookie, or this one for another account, is no device: limited with everyone else.
            // (The first character: the last of a base64 MAC may carry only padding bits.)
            let value = String(device.dropFirst("rcp_device=".count))
            let altered = "rcp_device=" + (value.first == "A" ? "B" : "A") + String(value.dropFirst())
            #expect(try await attempt("correct+horse+battery", device: altered).status == .tooManyRequests)
            #expect(
                try await attempt("x", device: device, email: "other%40shop.example").status == .tooManyRequests,
                "for another account the cookie is no device: this client's address is limited")
            // The device has a limit of its own: five failures, then it waits too.
            for i in 0..<5 { #expect(try await attempt("wrong\(i)", device: device).status == .unauthorized) }
            #expect(try await attempt("correct+horse+battery", device: device).status == .tooManyRequests)

            // Ten minutes later every bucket is full again. Failures elsewhere use up the account's once more; the
            // device still gets in, until the password changes: a cookie issued before that is no device any more.
            clock.advance(by: 600)
            for i in 0..<5 { #expect(try await attempt("wrong\(i)").status == .unauthorized) }
            #expect(try await attempt("correct+horse+battery").status == .tooManyRequests)
            #expect(try await attempt("correct+horse+battery", device: device).status == .seeOther)
            let owner = try #require(try await app.store.user(email: "owner@shop.example"))
            try await app.store.setPassword(
                userID: owner.id, hash: try await Passwords.hash("correct horse battery", cost: 4), mustChange: false)
            #expect(try await attempt("correct+horse+battery", device: device).status == .tooManyRequests)
        }
    }
}
