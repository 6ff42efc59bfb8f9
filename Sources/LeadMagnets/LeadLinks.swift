import Foundation
import ReciprocityCore
import Storage

/// The signed tokens of the lead magnet flow, each under its own purpose key (128-bit MAC):
/// - the confirmation link: workspace and the signup's current nonce, expiring with the pending signup;
/// - the gift link: workspace and signup, expiring after the magnet's download-link lifetime;
/// - the landing form: magnet and issue time (the minimum fill time is measured from it);
/// - the embedded form: magnet only (a static snippet on another site; its origin is checked instead).
public struct LeadLinks: Sendable {
    public let store: Store
    public let baseURL: String

    static let doiPurpose = "lead-doi"
    static let giftPurpose = "lead-gift"
    static let formPurpose = "lead-form"
    static let embedPurpose = "lead-embed"

    public init(store: Store, baseURL: String) {
        self.store = store
        self.baseURL = baseURL
    }

    public func landingURL(workspaceSlug: String, magnetSlug: String) -> String {
        baseURL + "/lm/" + workspaceSlug + "/" + magnetSlug
    }

    public func confirmURL(workspaceID: WorkspaceID, nonce: String, expires: Date) -> String {
        baseURL + "/doi/"
            + store.signToken(purpose: Self.doiPurpose, fields: [String(workspaceID), nonce], expiresAt: expires)
    }

    public func giftToken(workspaceID: WorkspaceID, signupID: Int64, expires: Date) -> String {
        store.signToken(purpose: Self.giftPurpose, fields: [String(workspaceID), String(signupID)], expiresAt: expires)
    }

    public func giftURL(workspaceID: WorkspaceID, signupID: Int64, expires: Date) -> String {
        baseURL + "/gift/" + giftToken(workspaceID: workspaceID, signupID: signupID, expires: expires)
    }

    public enum Checked<T: Sendable & Equatable>: Sendable, Equatable {
        case valid(T)
        case expired(T)
        case invalid
    }

    public struct DOITarget: Sendable, Equatable {
        public var workspaceID: WorkspaceID
        public var nonce: String
    }

    public func checkConfirm(_ token: String) -> Checked<DOITarget> {
        check(token, purpose: Self.doiPurpose) { f in
            guard f.count == 2, let ws = Int64(f[0]), !f[1].isEmpty else { return nil }
            return DOITarget(workspaceID: ws, nonce: f[1])
        }
    }

    public struct GiftTarget: Sendable, Equatable {
        public var workspaceID: WorkspaceID
        public var signupID: Int64
    }

    public func checkGift(_ token: String) -> Checked<GiftTarget> {
        check(token, purpose: Self.giftPurpose) { f in
            guard f.count == 2, let ws = Int64(f[0]), let id = Int64(f[1]) else { return nil }
            return GiftTarget(workspaceID: ws, signupID: id)
        }
    }

    private func check<T>(_ token: String, purpose: String, _ parse: ([String]) -> T?) -> Checked<T> {
        switch store.checkToken(token, purpose: purpose) {
        case .valid(let f): parse(f).map(Checked.valid) ?? .invalid
        case .expired(let f): parse(f).map(Checked.expired) ?? .invalid
        case .invalid: .invalid
        }
    }

    /// `textID`: the consent text version the form shows, so the proof records what the person saw even when the
    /// text was edited after the page was rendered.
    public func formToken(magnetID: LeadMagnetID, issuedAt: Date, textID: Int64?) -> String {
        store.signToken(
            purpose: Self.formPurpose,
            fields: [
                String(magnetID), String(Int64(issuedAt.timeIntervalSince1970 * 1000)), textID.map(String.init) ?? "",
            ])
    }

    public func embedToken(magnetID: LeadMagnetID, textID: Int64?) -> String {
        store.signToken(purpose: Self.embedPurpose, fields: [String(magnetID), textID.map(String.init) ?? ""])
    }

    public enum FormToken: Sendable, Equatable {
        case issued(Date, textID: Int64?)
        case embedded(textID: Int64?)
        case invalid

        public var textID: Int64? {
            switch self {
            case .issued(_, let id), .embedded(let id): id
            case .invalid: nil
            }
        }
        public var isEmbedded: Bool { if case .embedded = self { true } else { false } }
        public var issuedAt: Date? { if case .issued(let d, _) = self { d } else { nil } }
    }

    /// What a submitted form token says, for this magnet only.
    public func readFormToken(_ token: String, magnetID: LeadMagnetID) -> FormToken {
        if let f = store.verifyToken(token, purpose: Self.formPurpose), f.count == 3, f[0] == String(magnetID),
            let ms = Double(f[1])
        {
            return .issued(Date(timeIntervalSince1970: ms / 1000), textID: Int64(f[2]))
        }
        if let f = store.verifyToken(token, purpose: Self.embedPurpose), f.count == 2, f[0] == String(magnetID) {
            return .embedded(textID: Int64(f[1]))
        }
        return .invalid
    }
}
