import App
import Foundation
import Testing

/// Bad settings stop the start with one line that names the variable.
@Suite struct ConfigTests {
    func error(_ env: [String: String]) async -> String? {
        do {
            _ = try await AppConfig.load(environment: env)
            return nil
        } catch let e as ConfigError {
            return e.description
        } catch {
            return "\(error)"
        }
    }

    @Test func smtpURLMistakesAreOneClearLine() async throws {
        let scheme = try #require(await error(["RECIPROCITY_SMTP_URL": "http://mail.example.com"]))
        #expect(scheme.contains("RECIPROCITY_SMTP_URL must start with smtp:// or smtps://"))
        #expect(!scheme.contains("\n"))
        let tls = try #require(await error(["RECIPROCITY_SMTP_URL": "smtp://mail.example.com?tls=sometimes"]))
        #expect(tls.contains("tls must be starttls, implicit or none"))
        let ca = try #require(
            await error(["RECIPROCITY_SMTP_URL": "smtp://mail.example.com", "RECIPROCITY_SMTP_CA_FILE": "/nope.pem"]))
        #expect(ca.contains("RECIPROCITY_SMTP_CA_FILE"))
        #expect(await error(["RECIPROCITY_SMTP_URL": "smtp://u:p@mail.example.com:587?tls=starttls"]) == nil)
        #expect(await error([:]) == nil, "no SMTP URL: the development outbox")
    }

    /// Real mail with an http base URL works but its unsubscribe links are not RFC 8058's https: a start-up warning.
    @Test func realMailWithoutAnHTTPSBaseURLIsWarnedAbout() async throws {
        let smtp = "smtp://mail.example.com"
        let plain = try await AppConfig.load(environment: ["RECIPROCITY_SMTP_URL": smtp])
        #expect(plain.warnings.count == 1 && plain.warnings[0].contains("RECIPROCITY_BASE_URL"))
        let https = try await AppConfig.load(
            environment: ["RECIPROCITY_SMTP_URL": smtp, "RECIPROCITY_BASE_URL": "https://reciprocity.example.com"])
        #expect(https.warnings.isEmpty)
        #expect(try await AppConfig.load(environment: [:]).warnings.isEmpty, "the development outbox sends nothing")
    }

    @Test func theClickFlushIntervalIsBounded() async throws {
        for bad in ["0", "9", "60001", "250ms", "soon"] {
            let message = try #require(await error(["RECIPROCITY_REFERRAL_CLICK_FLUSH_MS": bad]), "\(bad)")
            #expect(message.contains("RECIPROCITY_REFERRAL_CLICK_FLUSH_MS must be from 10 to 60000"))
        }
        let config = try await AppConfig.load(environment: ["RECIPROCITY_REFERRAL_CLICK_FLUSH_MS": "250"])
        #expect(config.referralClickFlush == .milliseconds(250))
        #expect(try await AppConfig.load(environment: [:]).referralClickFlush == .seconds(1))
    }

    @Test func jobRetentionIsReadAndAtLeastADay() async throws {
        #expect(try await AppConfig.load(environment: [:]).jobRetentionDays == 14)
        #expect(try await AppConfig.load(environment: ["RECIPROCITY_JOB_RETENTION_DAYS": "30"]).jobRetentionDays == 30)
        #expect(try await AppConfig.load(environment: ["RECIPROCITY_JOB_RETENTION_DAYS": "0"]).jobRetentionDays == 1)
        let defaults = try await AppConfig.load(environment: [:])
        #expect(defaults.clickRetentionDays == 400 && defaults.mailBodyRetentionDays == 90)
        #expect(
            try await AppConfig.load(environment: ["RECIPROCITY_CLICK_RETENTION_DAYS": "366"]).clickRetentionDays == 366
        )
        // Shorter than the longest attribution window would lose clicks attribution still reads.
        await #expect(throws: ConfigError.self) {
            try await AppConfig.load(environment: ["RECIPROCITY_CLICK_RETENTION_DAYS": "365"])
        }
        await #expect(throws: ConfigError.self) {
            try await AppConfig.load(environment: ["RECIPROCITY_MAIL_BODY_RETENTION_DAYS": "0"])
        }
    }
}
