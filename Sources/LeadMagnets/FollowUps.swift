import Foundation
import Logging
import Messaging
import ReciprocityCore
import Storage

/// "Give, then ask": the magnet's follow-up steps after the gift. Each step is one job; it writes its mail and the
/// next step's job in one transaction. A step is skipped for good when the contact bought since confirming (the
/// purchase counts for the magnet), withdrew the consent, or was erased. Frequency caps and quiet hours apply at
/// send time, in the outbox, like every marketing mail.
public struct FollowUps: Sendable {
    public let store: Store
    public let mailer: Mailer
    public let logger: Logger

    public init(store: Store, mailer: Mailer, logger: Logger) {
        self.store = store
        self.mailer = mailer
        self.logger = logger
    }

    /// The job of a step, `seconds` after `start` (the confirmation).
    static func job(signup: LeadSignup, step: Int, after seconds: Int64, from start: Date) -> JobRequest {
        JobRequest(
            kind: Store.leadFollowUpJob, workspaceID: signup.workspaceID,
            payload: #"{"signup_id":\#(signup.id),"step":\#(step)}"#,
            runAt: start.addingTimeInterval(TimeInterval(seconds)),
            idempotencyKey: "lead-follow-up:\(signup.id):\(step)")
    }

    public enum Outcome: Sendable, Equatable {
        case sent(outboxID: Int64)
        case stopped(String)
        case nothing
    }

    @discardableResult
    public func run(signupID: Int64, step: Int) async throws -> Outcome {
        guard let signup = try await store.leadSignup(id: signupID), signup.state == .confirmed,
            let confirmedAt = signup.confirmation?.at,
            let magnet = try await store.leadMagnet(workspaceID: signup.workspaceID, id: signup.magnetID),
            step >= 0, step < magnet.followUps.count,
            let workspace = try await store.workspace(id: signup.workspaceID)
        else { return .nothing }
        if let reason = signup.followUpStopped { return .stopped(reason) }
        guard let contact = try await store.contact(workspaceID: signup.workspaceID, id: signup.contactID),
            contact.erasedAt == nil
        else { return try await stop(signup, "erased") }
        if try await store.hasOrdered(workspaceID: signup.workspaceID, contactID: contact.id, since: confirmedAt) {
            return try await stop(signup, "purchased")
        }
        let consent = try await store.consentState(
            store.db, workspaceID: signup.workspaceID, contactID: contact.id, purpose: signup.purpose)
        guard consent == .granted else { return try await stop(signup, "no_consent") }
        let s = magnet.followUps[step]
        // One Message-ID per signup and step: a job run again after its mail committed (a crash before the job was
        // marked done, a lost lease) writes no second marketing mail.
        let draft = try await mailer.draft(
            workspace: workspace, kind: .leadFollowUp, to: try MailRecipient(contact),
            values: [
                "step": [
                    "subject": s.subject.replacingOccurrences(of: "\n", with: " "),
                    "paragraphs": LeadMagnet.paragraphs(s.body).map { ["text": $0] as [String: Any] },
                ] as [String: Any]
            ], messageID: "f." + store.suppressionHash("lead-follow-up:\(signup.id):\(step)").prefix(32))
        let id = try await store.db.transaction { tx -> Int64? in
            guard let id = try await store.enqueueMailOnce(tx, draft) else { return nil }
            if step + 1 < magnet.followUps.count {
                _ = try await store.enqueue(
                    tx,
                    Self.job(
                        signup: signup, step: step + 1, after: magnet.followUps[step + 1].afterSeconds,
                        from: confirmedAt))
            }
            return id
        }
        return id.map { .sent(outboxID: $0) } ?? .nothing
    }

    func stop(_ signup: LeadSignup, _ reason: String) async throws -> Outcome {
        try await store.stopFollowUps(signupID: signup.id, reason: reason)
        logger.info("lead follow-ups stopped", metadata: ["signup": "\(signup.id)", "reason": "\(reason)"])
        return .stopped(reason)
    }
}
