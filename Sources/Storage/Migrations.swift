import Foundation
import Logging
import ReciprocityCore

/// An ordered, named schema change. Once landed, a migration is never edited: add a new one instead.
public struct Migration: Sendable {
    public let id: Int
    public let name: String
    public let statements: @Sendable (SQLDialect) -> [String]
    /// Runs after the statements, in the same transaction: fills what SQL alone cannot compute.
    public let backfill: (@Sendable (any SQLExecutor) async throws -> Void)?

    public init(
        id: Int, name: String, backfill: (@Sendable (any SQLExecutor) async throws -> Void)? = nil,
        statements: @escaping @Sendable (SQLDialect) -> [String]
    ) {
        self.id = id
        self.name = name
        self.backfill = backfill
        self.statements = statements
    }
}

public enum Migrator {
    /// Every migration, in order.
    public static let all: [Migration] = [
        Schema.v1Foundation, Schema.v2Mail, Schema.v3Reviews, Schema.v4LeadMagnets, Schema.v5Referrals,
        Schema.v6QueryPaths, Schema.v7Returns, Schema.v8ClickIndexes, Schema.v9EventTags, Schema.v10CreditRedemptions,
        Schema.v11ContactIdentity, Schema.v12ClickDays, Schema.v13DKIMActivation, Schema.v14PayoutCreditors,
        Schema.v15OutboxBodies, Schema.v16Invitations,
    ]

    /// The newest migration id, which `/readyz` compares against the database.
    public static var latest: Int { all.last?.id ?? 0 }

    /// Applies every pending migration, each in its own transaction. Safe to run from several nodes at once:
    /// on PostgreSQL an advisory lock serialises them; on SQLite the single writer does.
    @discardableResult
    public static func migrate(
        _ db: any SQLDatabase, logger: Logger, clock: any WallClock = SystemClock()
    ) async throws -> [Migration] {
        // Under the same lock as the migrations: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a
        // concurrent one (the loser fails on pg_type's unique index), and nodes starting together on a fresh
        // database all run it.
        _ = try await db.transaction { tx in
            try await waitForOtherMigrators(tx)
            try await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (id BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
        }
        var applied: [Migration] = []
        for migration in all {
            let didApply = try await db.transaction { tx in
                try await waitForOtherMigrators(tx)
                let done = try await tx.scalar("SELECT COUNT(*) FROM schema_migrations WHERE id = ?", migration.id)
                guard done == 0 else { return false }
                for statement in migration.statements(tx.dialect) {
                    try await tx.execute(tx.dialect.ddl(statement), [])
                }
                try await migration.backfill?(tx)
                try await tx.execute(
                    "INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)", migration.id,
                    migration.name, clock.now().epochMillis)
                return true
            }
            if didApply {
                logger.info("applied migration", metadata: ["id": "\(migration.id)", "name": "\(migration.name)"])
                applied.append(migration)
            }
        }
        return applied
    }

    /// Takes the migrations' transaction-scoped advisory lock, waiting for a concurrent migrator rather than skipping
    /// its work. SQLite's single writer already serialises, so there it does nothing.
    private static func waitForOtherMigrators(_ tx: any SQLExecutor) async throws {
        if let lock = tx.dialect.advisoryLockSQL(key: AdvisoryLockKey.migrations, wait: true) {
            _ = try await tx.query(lock, [])
        }
    }

    /// The id of the newest applied migration, 0 if none.
    public static func currentVersion(_ db: any SQLExecutor) async throws -> Int {
        let exists = try await db.query("SELECT id FROM schema_migrations ORDER BY id DESC LIMIT 1")
        return Int(exists.first?.int("id") ?? 0)
    }
}

enum Schema {
    static let v1Foundation = Migration(id: 1, name: "foundation") { _ in
        [
            """
            CREATE TABLE workspaces (
              id {pk},
              slug TEXT NOT NULL UNIQUE,
              name TEXT NOT NULL,
              locale TEXT NOT NULL DEFAULT 'de',
              time_zone TEXT NOT NULL DEFAULT 'Europe/Berlin',
              sender_name TEXT NOT NULL,
              sender_email TEXT NOT NULL,
              imprint_url TEXT NOT NULL DEFAULT '',
              privacy_url TEXT NOT NULL DEFAULT '',
              created_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE users (
              id {pk},
              email TEXT NOT NULL UNIQUE,
              name TEXT NOT NULL,
              password_hash TEXT NOT NULL,
              locale TEXT NOT NULL DEFAULT 'de',
              must_change_password BIGINT NOT NULL DEFAULT 0,
              created_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE memberships (
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
              role TEXT NOT NULL CHECK (role IN ('owner', 'marketer', 'support')),
              created_at BIGINT NOT NULL,
              PRIMARY KEY (workspace_id, user_id)
            )
            """,
            """
            CREATE TABLE sessions (
              token_hash TEXT PRIMARY KEY,
              user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              csrf_token TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              expires_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX sessions_expiry ON sessions (expires_at)",
            """
            CREATE TABLE api_keys (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              name TEXT NOT NULL,
              prefix TEXT NOT NULL UNIQUE,
              secret_hash TEXT NOT NULL,
              scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
              created_at BIGINT NOT NULL,
              last_used_at BIGINT,
              revoked_at BIGINT
            )
            """,
            """
            CREATE TABLE contacts (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              email TEXT NOT NULL,
              email_normalized TEXT NOT NULL,
              first_name TEXT,
              last_name TEXT,
              locale TEXT NOT NULL DEFAULT 'de',
              source TEXT NOT NULL,
              source_ref TEXT,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              erased_at BIGINT,
              UNIQUE (workspace_id, email_normalized)
            )
            """,
            """
            CREATE TABLE consent_texts (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              purpose TEXT NOT NULL,
              version BIGINT NOT NULL,
              locale TEXT NOT NULL,
              body TEXT NOT NULL,
              body_hash TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              UNIQUE (workspace_id, purpose, version),
              UNIQUE (workspace_id, purpose, locale, body_hash)
            )
            """,
            """
            CREATE TABLE consents (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              purpose TEXT NOT NULL CHECK (purpose IN ('newsletter', 'review_request', 'survey', 'referral_program')),
              state TEXT NOT NULL CHECK (state IN ('pending', 'granted', 'withdrawn')),
              legal_basis TEXT NOT NULL,
              text_id BIGINT REFERENCES consent_texts(id),
              source TEXT NOT NULL,
              form_id TEXT,
              page_url TEXT,
              requested_at BIGINT,
              requested_ip TEXT,
              requested_user_agent TEXT,
              granted_at BIGINT,
              granted_ip TEXT,
              granted_user_agent TEXT,
              withdrawn_at BIGINT,
              updated_at BIGINT NOT NULL,
              UNIQUE (workspace_id, contact_id, purpose)
            )
            """,
            """
            CREATE TABLE consent_events (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              purpose TEXT NOT NULL,
              action TEXT NOT NULL,
              state TEXT NOT NULL,
              legal_basis TEXT NOT NULL,
              text_id BIGINT REFERENCES consent_texts(id),
              source TEXT NOT NULL,
              ip TEXT,
              user_agent TEXT,
              at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX consent_events_contact ON consent_events (workspace_id, contact_id)",
            """
            CREATE TABLE suppressions (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              email_hash TEXT NOT NULL,
              reason TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              UNIQUE (workspace_id, email_hash)
            )
            """,
            """
            CREATE TABLE orders (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              external_id TEXT NOT NULL,
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              status TEXT NOT NULL,
              currency TEXT NOT NULL,
              subtotal_minor BIGINT NOT NULL,
              shipping_minor BIGINT NOT NULL,
              tax_minor BIGINT NOT NULL,
              discount_minor BIGINT NOT NULL,
              total_minor BIGINT NOT NULL,
              shipping_name TEXT,
              shipping_street TEXT,
              shipping_postal_code TEXT,
              shipping_city TEXT,
              shipping_country TEXT,
              coupon_code TEXT,
              referral_code TEXT,
              referred_by TEXT,
              payment_fingerprint TEXT,
              placed_at BIGINT,
              paid_at BIGINT,
              shipped_at BIGINT,
              delivered_at BIGINT,
              partially_returned_at BIGINT,
              returned_at BIGINT,
              cancelled_at BIGINT,
              body_hash TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              UNIQUE (workspace_id, external_id)
            )
            """,
            "CREATE INDEX orders_contact ON orders (workspace_id, contact_id)",
            "CREATE INDEX orders_status ON orders (workspace_id, status)",
            """
            CREATE TABLE order_items (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              order_id BIGINT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
              position BIGINT NOT NULL,
              sku TEXT NOT NULL,
              name TEXT NOT NULL,
              quantity BIGINT NOT NULL CHECK (quantity > 0),
              unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
              category TEXT,
              UNIQUE (order_id, position)
            )
            """,
            """
            CREATE TABLE order_status_changes (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              order_id BIGINT NOT NULL REFERENCES orders(id),
              from_status TEXT,
              to_status TEXT NOT NULL,
              at BIGINT NOT NULL,
              UNIQUE (order_id, to_status)
            )
            """,
            """
            CREATE TABLE domain_events (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              type TEXT NOT NULL,
              subject_type TEXT NOT NULL,
              subject_id BIGINT NOT NULL,
              payload TEXT NOT NULL,
              dedupe_key TEXT NOT NULL UNIQUE,
              occurred_at BIGINT NOT NULL,
              recorded_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX domain_events_subject ON domain_events (workspace_id, subject_type, subject_id)",
            """
            CREATE TABLE jobs (
              id {pk},
              workspace_id BIGINT REFERENCES workspaces(id),
              kind TEXT NOT NULL,
              payload TEXT NOT NULL,
              state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'dead')),
              attempts BIGINT NOT NULL DEFAULT 0,
              max_attempts BIGINT NOT NULL,
              run_at BIGINT NOT NULL,
              lease_expires_at BIGINT,
              locked_by TEXT,
              last_error TEXT,
              idempotency_key TEXT NOT NULL UNIQUE,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              finished_at BIGINT
            )
            """,
            "CREATE INDEX jobs_due ON jobs (state, run_at)",
            """
            CREATE TABLE audit_log (
              id {pk},
              workspace_id BIGINT REFERENCES workspaces(id),
              actor TEXT NOT NULL,
              action TEXT NOT NULL,
              subject TEXT NOT NULL,
              detail TEXT NOT NULL DEFAULT '',
              at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX audit_log_workspace ON audit_log (workspace_id, at)",
        ]
    }

    /// The mail engine: per-workspace mail settings, DKIM keys, edited templates, the outbox and mail events.
    static let v2Mail = Migration(id: 2, name: "mail") { _ in
        [
            """
            CREATE TABLE mail_settings (
              workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id),
              existing_customer_mode BIGINT NOT NULL DEFAULT 0,
              cap_count BIGINT NOT NULL DEFAULT 2,
              cap_days BIGINT NOT NULL DEFAULT 7,
              quiet_start BIGINT NOT NULL DEFAULT 20,
              quiet_end BIGINT NOT NULL DEFAULT 8,
              rate_per_second BIGINT NOT NULL DEFAULT 20,
              address_form TEXT NOT NULL DEFAULT 'sie' CHECK (address_form IN ('sie', 'du')),
              brand_color TEXT NOT NULL DEFAULT '#2f5d50',
              logo_url TEXT NOT NULL DEFAULT '',
              updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE dkim_keys (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              domain TEXT NOT NULL,
              selector TEXT NOT NULL,
              algorithm TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
              private_key TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              UNIQUE (workspace_id, domain, selector)
            )
            """,
            """
            CREATE TABLE mail_templates (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              kind TEXT NOT NULL,
              variant TEXT NOT NULL,
              subject TEXT NOT NULL,
              text_body TEXT NOT NULL,
              html_body TEXT NOT NULL,
              updated_at BIGINT NOT NULL,
              updated_by TEXT NOT NULL,
              UNIQUE (workspace_id, kind, variant)
            )
            """,
            """
            CREATE TABLE outbox (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT REFERENCES contacts(id),
              kind TEXT NOT NULL,
              mail_class TEXT NOT NULL CHECK (mail_class IN ('transactional', 'marketing')),
              recipient TEXT,
              recipient_hash TEXT NOT NULL,
              message_id TEXT NOT NULL UNIQUE,
              subject TEXT NOT NULL,
              message TEXT,
              state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'bounced', 'suppressed', 'failed')),
              is_test BIGINT NOT NULL DEFAULT 0,
              reason TEXT NOT NULL DEFAULT '',
              legal_basis TEXT,
              attempts BIGINT NOT NULL DEFAULT 0,
              transport TEXT NOT NULL DEFAULT '',
              smtp_reply TEXT NOT NULL DEFAULT '',
              not_before BIGINT NOT NULL,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              sending_at BIGINT,
              sent_at BIGINT
            )
            """,
            "CREATE INDEX outbox_workspace_state ON outbox (workspace_id, state, id)",
            "CREATE INDEX outbox_recipient ON outbox (workspace_id, recipient_hash, mail_class, sending_at)",
            """
            CREATE TABLE mail_events (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              outbox_id BIGINT REFERENCES outbox(id),
              type TEXT NOT NULL,
              detail TEXT NOT NULL DEFAULT '',
              source TEXT NOT NULL,
              at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX mail_events_workspace ON mail_events (workspace_id, at)",
        ]
    }

    /// Reviews (issue 4): settings, requests and the items asked about, reviews with photos, and favours.
    static let v3Reviews = Migration(id: 3, name: "reviews") { _ in
        [
            """
            CREATE TABLE review_settings (
              workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id),
              delay_seconds BIGINT NOT NULL,
              transit_seconds BIGINT NOT NULL,
              reminder_seconds BIGINT NOT NULL,
              reminders_enabled BIGINT NOT NULL,
              category_delays TEXT NOT NULL DEFAULT '{}',
              disclosure TEXT NOT NULL DEFAULT '',
              open_form BIGINT NOT NULL DEFAULT 0,
              token_seconds BIGINT NOT NULL,
              edit_seconds BIGINT NOT NULL,
              incentive TEXT,
              updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE review_requests (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              order_id BIGINT NOT NULL UNIQUE REFERENCES orders(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              state TEXT NOT NULL CHECK (state IN ('scheduled', 'sent', 'skipped', 'reminded')),
              due_at BIGINT NOT NULL,
              skip_reason TEXT,
              incentive TEXT,
              outbox_id BIGINT REFERENCES outbox(id),
              reminder_outbox_id BIGINT REFERENCES outbox(id),
              sent_at BIGINT,
              reminded_at BIGINT,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX review_requests_workspace ON review_requests (workspace_id, state, due_at)",
            """
            CREATE TABLE review_request_items (
              request_id BIGINT NOT NULL REFERENCES review_requests(id),
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              sku TEXT NOT NULL,
              product_name TEXT NOT NULL,
              asked_at BIGINT NOT NULL,
              PRIMARY KEY (request_id, sku)
            )
            """,
            "CREATE INDEX review_request_items_asked ON review_request_items (workspace_id, contact_id, sku, asked_at)",
            """
            CREATE TABLE reviews (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              sku TEXT NOT NULL,
              product_name TEXT NOT NULL,
              source TEXT NOT NULL CHECK (source IN ('verified', 'unverified', 'imported')),
              status TEXT NOT NULL CHECK (status IN ('published', 'held', 'hidden', 'deleted')),
              rating BIGINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
              title TEXT NOT NULL DEFAULT '',
              body TEXT NOT NULL DEFAULT '',
              display_name TEXT NOT NULL DEFAULT '',
              locale TEXT NOT NULL DEFAULT 'de',
              order_id BIGINT REFERENCES orders(id),
              request_id BIGINT REFERENCES review_requests(id),
              contact_id BIGINT REFERENCES contacts(id),
              import_source TEXT,
              incentive TEXT,
              hold_reasons TEXT NOT NULL DEFAULT '',
              hidden_reason TEXT,
              reply TEXT,
              replied_at BIGINT,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              UNIQUE (request_id, sku)
            )
            """,
            "CREATE INDEX reviews_product ON reviews (workspace_id, sku, status, created_at)",
            "CREATE INDEX reviews_workspace ON reviews (workspace_id, status, created_at)",
            """
            CREATE TABLE review_photos (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              review_id BIGINT NOT NULL REFERENCES reviews(id),
              content_type TEXT NOT NULL,
              bytes {blob} NOT NULL,
              created_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX review_photos_review ON review_photos (review_id)",
            """
            CREATE TABLE favours (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              kind TEXT NOT NULL,
              subject_type TEXT NOT NULL,
              subject_id BIGINT NOT NULL,
              occurred_at BIGINT NOT NULL,
              UNIQUE (kind, subject_type, subject_id)
            )
            """,
            "CREATE INDEX favours_contact ON favours (workspace_id, contact_id, occurred_at)",
        ]
    }

    /// Lead magnets (issue 5): gifts for contact data, double opt-in signups with their proof, voucher pools,
    /// sample shipments, daily counters that survive erasure, and the merchant's disposable-domain additions.
    static let v4LeadMagnets = Migration(id: 4, name: "lead_magnets") { _ in
        [
            """
            CREATE TABLE lead_magnets (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              slug TEXT NOT NULL,
              name TEXT NOT NULL,
              locale TEXT NOT NULL,
              headline TEXT NOT NULL,
              body TEXT NOT NULL,
              image_url TEXT,
              gift_kind TEXT NOT NULL CHECK (gift_kind IN ('file', 'link', 'voucher', 'sample')),
              gift_title TEXT NOT NULL,
              gift_url TEXT,
              sample_stock BIGINT,
              consent_text TEXT NOT NULL,
              purpose TEXT NOT NULL,
              ask_name BIGINT NOT NULL,
              fields TEXT NOT NULL,
              allowed_origins TEXT NOT NULL,
              currency TEXT NOT NULL,
              unit_cost_minor BIGINT NOT NULL,
              fixed_cost_minor BIGINT NOT NULL,
              download_link_seconds BIGINT NOT NULL,
              pending_seconds BIGINT NOT NULL,
              resend_window_seconds BIGINT NOT NULL,
              min_fill_seconds BIGINT NOT NULL,
              voucher_low_water BIGINT NOT NULL,
              follow_ups TEXT NOT NULL,
              active BIGINT NOT NULL,
              file_key TEXT,
              file_name TEXT,
              file_type TEXT,
              file_size BIGINT,
              file_sha256 TEXT,
              created_at BIGINT NOT NULL,
              updated_at BIGINT NOT NULL,
              UNIQUE (workspace_id, slug)
            )
            """,
            """
            CREATE TABLE lead_signups (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              magnet_id BIGINT NOT NULL REFERENCES lead_magnets(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed')),
              purpose TEXT NOT NULL,
              text_id BIGINT NOT NULL REFERENCES consent_texts(id),
              form_id TEXT NOT NULL,
              page_url TEXT,
              fields TEXT NOT NULL,
              signup_at BIGINT NOT NULL,
              signup_ip TEXT,
              signup_user_agent TEXT,
              doi_nonce TEXT UNIQUE,
              confirm_outbox_id BIGINT REFERENCES outbox(id),
              confirm_mail_at BIGINT,
              confirmed_at BIGINT,
              confirmed_ip TEXT,
              confirmed_user_agent TEXT,
              expires_at BIGINT,
              delivery_outbox_id BIGINT REFERENCES outbox(id),
              delivery_mail_at BIGINT,
              downloads BIGINT NOT NULL DEFAULT 0,
              follow_up_stopped TEXT,
              erased_at BIGINT
            )
            """,
            // One pending signup per person and magnet; confirmed ones accumulate (each is proof of its own DOI).
            """
            CREATE UNIQUE INDEX lead_signups_pending ON lead_signups (workspace_id, magnet_id, contact_id)
            WHERE state = 'pending'
            """,
            "CREATE INDEX lead_signups_expiry ON lead_signups (state, expires_at)",
            "CREATE INDEX lead_signups_contact ON lead_signups (workspace_id, contact_id)",
            """
            CREATE TABLE lead_vouchers (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              magnet_id BIGINT NOT NULL REFERENCES lead_magnets(id),
              code TEXT NOT NULL,
              signup_id BIGINT UNIQUE REFERENCES lead_signups(id),
              assigned_at BIGINT,
              created_at BIGINT NOT NULL,
              UNIQUE (magnet_id, code)
            )
            """,
            "CREATE INDEX lead_vouchers_free ON lead_vouchers (magnet_id, signup_id, id)",
            """
            CREATE TABLE lead_shipments (
              signup_id BIGINT PRIMARY KEY REFERENCES lead_signups(id),
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              magnet_id BIGINT NOT NULL REFERENCES lead_magnets(id),
              state TEXT NOT NULL CHECK (state IN ('queued', 'out_of_stock', 'shipped')),
              name TEXT,
              street TEXT,
              postal_code TEXT,
              city TEXT,
              country TEXT,
              created_at BIGINT NOT NULL,
              shipped_at BIGINT
            )
            """,
            """
            CREATE TABLE lead_stats (
              magnet_id BIGINT NOT NULL REFERENCES lead_magnets(id),
              day TEXT NOT NULL,
              views BIGINT NOT NULL DEFAULT 0,
              signups BIGINT NOT NULL DEFAULT 0,
              confirmations BIGINT NOT NULL DEFAULT 0,
              downloads BIGINT NOT NULL DEFAULT 0,
              PRIMARY KEY (magnet_id, day)
            )
            """,
            """
            CREATE TABLE disposable_domains (
              domain TEXT PRIMARY KEY,
              added_at BIGINT NOT NULL
            )
            """,
        ]
    }

    /// The referral programme (issue 6): settings, advocates and their codes, clicks, referred orders with their
    /// decision, rewards through their lifecycle, and what issuing writes (vouchers, credit, payouts, premiums).
    /// Exactly once is carried by unique constraints: one referral per order, one reward per referral and side,
    /// one milestone reward per advocate and count, one ledger entry per reward and kind.
    static let v5Referrals = Migration(id: 5, name: "referrals") { _ in
        [
            "ALTER TABLE orders ADD COLUMN client_device TEXT",
            "CREATE INDEX orders_device ON orders (workspace_id, client_device)",
            """
            CREATE TABLE referral_programmes (
              workspace_id BIGINT PRIMARY KEY REFERENCES workspaces(id),
              settings TEXT NOT NULL,
              updated_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE referral_premiums (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              name TEXT NOT NULL,
              description TEXT NOT NULL,
              image_url TEXT,
              cost_minor BIGINT NOT NULL,
              shipping_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              stock BIGINT NOT NULL CHECK (stock >= 0),
              active BIGINT NOT NULL,
              created_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE advocates (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              code TEXT NOT NULL UNIQUE,
              state TEXT NOT NULL CHECK (state IN ('active', 'left')),
              link_version BIGINT NOT NULL,
              premium_id BIGINT REFERENCES referral_premiums(id),
              payout_name TEXT,
              payout_iban TEXT,
              devices TEXT NOT NULL,
              joined_at BIGINT NOT NULL,
              left_at BIGINT,
              UNIQUE (workspace_id, contact_id)
            )
            """,
            """
            CREATE TABLE referral_clicks (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              advocate_id BIGINT NOT NULL REFERENCES advocates(id),
              at BIGINT NOT NULL,
              ip_hash TEXT NOT NULL,
              ua_family TEXT NOT NULL,
              device TEXT NOT NULL
            )
            """,
            "CREATE INDEX referral_clicks_advocate ON referral_clicks (advocate_id, at)",
            "CREATE INDEX referral_clicks_device ON referral_clicks (workspace_id, device, at)",
            "CREATE INDEX referral_clicks_day ON referral_clicks (workspace_id, at)",
            """
            CREATE TABLE referrals (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              advocate_id BIGINT NOT NULL REFERENCES advocates(id),
              order_id BIGINT NOT NULL UNIQUE REFERENCES orders(id),
              friend_contact_id BIGINT NOT NULL REFERENCES contacts(id),
              via TEXT NOT NULL,
              status TEXT NOT NULL,
              reasons TEXT NOT NULL,
              base_minor BIGINT NOT NULL,
              revenue_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              decided_at BIGINT,
              decided_by TEXT,
              confirmed_at BIGINT
            )
            """,
            "CREATE INDEX referrals_advocate ON referrals (advocate_id, created_at)",
            "CREATE INDEX referrals_status ON referrals (workspace_id, status, created_at)",
            """
            CREATE TABLE referral_rewards (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              referral_id BIGINT REFERENCES referrals(id),
              advocate_id BIGINT NOT NULL REFERENCES advocates(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              beneficiary TEXT NOT NULL CHECK (beneficiary IN ('advocate', 'friend')),
              reason TEXT NOT NULL,
              milestone BIGINT NOT NULL,
              type TEXT NOT NULL,
              value_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              state TEXT NOT NULL,
              held_until BIGINT,
              approved_at BIGINT,
              approved_by TEXT,
              issued_at BIGINT,
              tax_year BIGINT,
              voucher_code TEXT,
              premium_id BIGINT REFERENCES referral_premiums(id),
              outbox_id BIGINT,
              ended_at BIGINT,
              end_reason TEXT,
              created_at BIGINT NOT NULL
            )
            """,
            """
            CREATE UNIQUE INDEX referral_rewards_once ON referral_rewards (referral_id, beneficiary)
              WHERE reason = 'referral'
            """,
            """
            CREATE UNIQUE INDEX referral_rewards_milestone ON referral_rewards (advocate_id, milestone)
              WHERE reason = 'milestone'
            """,
            "CREATE INDEX referral_rewards_state ON referral_rewards (workspace_id, state, held_until)",
            "CREATE INDEX referral_rewards_contact ON referral_rewards (workspace_id, contact_id, tax_year)",
            """
            CREATE TABLE referral_vouchers (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              code TEXT NOT NULL,
              reward_id BIGINT UNIQUE REFERENCES referral_rewards(id),
              redeemed_at BIGINT,
              invalidated_at BIGINT,
              added_at BIGINT NOT NULL,
              UNIQUE (workspace_id, code)
            )
            """,
            "CREATE INDEX referral_vouchers_free ON referral_vouchers (workspace_id, reward_id, id)",
            """
            CREATE TABLE referral_credit (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              reward_id BIGINT NOT NULL REFERENCES referral_rewards(id),
              kind TEXT NOT NULL CHECK (kind IN ('booking', 'reversal')),
              delta_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              at BIGINT NOT NULL,
              UNIQUE (reward_id, kind)
            )
            """,
            "CREATE INDEX referral_credit_contact ON referral_credit (workspace_id, contact_id)",
            """
            CREATE TABLE referral_payout_batches (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              message_id TEXT NOT NULL UNIQUE,
              count BIGINT NOT NULL,
              total_minor BIGINT NOT NULL,
              created_by TEXT NOT NULL,
              created_at BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE referral_payouts (
              reward_id BIGINT PRIMARY KEY REFERENCES referral_rewards(id),
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              advocate_id BIGINT NOT NULL REFERENCES advocates(id),
              amount_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              state TEXT NOT NULL CHECK (state IN ('open', 'exported', 'cancelled', 'owed_back')),
              batch_id BIGINT REFERENCES referral_payout_batches(id),
              created_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX referral_payouts_state ON referral_payouts (workspace_id, state)",
            """
            CREATE TABLE referral_fulfilments (
              reward_id BIGINT PRIMARY KEY REFERENCES referral_rewards(id),
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              premium_id BIGINT REFERENCES referral_premiums(id),
              state TEXT NOT NULL CHECK (state IN ('awaiting_choice', 'queued', 'shipped', 'cancelled')),
              created_at BIGINT NOT NULL,
              shipped_at BIGINT
            )
            """,
        ]
    }

    /// Indexes that let hot statements stop early whatever the planner knows about the table (PostgreSQL plans a
    /// statement on a table it still thinks empty by tie-breaking between indexes):
    /// - the job claim's `ORDER BY run_at, id` is the index order, so PostgreSQL need not sort the whole backlog
    ///   (SQLite had the id for free as the rowid);
    /// - `orders_device` goes: no statement filters on the device, and PostgreSQL took it for the external-id
    ///   look-up of every order PUT, scanning the workspace's orders.
    static let v6QueryPaths = Migration(id: 6, name: "query_paths") { _ in
        [
            "DROP INDEX jobs_due",
            "CREATE INDEX jobs_due ON jobs (state, run_at, id)",
            "DROP INDEX orders_device",
        ]
    }

    /// Partial returns:
    /// - `order_items.returned_quantity`: the units of an item the customer sent back, as the shop reports them;
    /// - `referrals.minimum_minor`: the programme's minimum order value when the referral was decided, so a later
    ///   partial return is judged by the rule the order was placed under;
    /// - a milestone bonus that ended because the advocate fell below it (`end_reason` `milestone_lost:…`) no
    ///   longer blocks the same milestone when the advocate reaches it again; one voided by hand still does;
    /// - the fulfilment list's count and filter by state have an index.
    static let v7Returns = Migration(id: 7, name: "returns") { _ in
        [
            """
            ALTER TABLE order_items ADD COLUMN returned_quantity BIGINT NOT NULL DEFAULT 0
              CHECK (returned_quantity >= 0 AND returned_quantity <= quantity)
            """,
            "ALTER TABLE referrals ADD COLUMN minimum_minor BIGINT",
            "DROP INDEX referral_rewards_milestone",
            """
            CREATE UNIQUE INDEX referral_rewards_milestone ON referral_rewards (advocate_id, milestone)
              WHERE reason = 'milestone'
                AND NOT (state IN ('void', 'clawed_back') AND substr(COALESCE(end_reason, ''), 1, 15) = 'milestone_lost:')
            """,
            "CREATE INDEX referral_fulfilments_state ON referral_fulfilments (workspace_id, state, created_at)",
        ]
    }

    /// Clicks keep two indexes, not three: every redirect's click is written into each of them, and the figures'
    /// count per workspace and day reads the clicks through the workspace's advocates and `referral_clicks_advocate`
    /// (advocate, time) instead of an index of their own (docs/decisions/0012-fast-path-bytes.md).
    static let v8ClickIndexes = Migration(id: 8, name: "click_indexes") { _ in
        ["DROP INDEX referral_clicks_day"]
    }

    /// An event keeps the tags its subscribers were chosen by (`EventSubscriptions`, decision 0022), as a sorted,
    /// comma-separated list ('' for none: a NULL would give a multi-row insert another statement shape, decision
    /// 0008). They only grow, so a subscriber's job is enqueued once per event, also after the job row is purged.
    static let v9EventTags = Migration(id: 9, name: "event_tags") { _ in
        ["ALTER TABLE domain_events ADD COLUMN tags TEXT NOT NULL DEFAULT ''"]
    }

    /// A contact's identity for fraud matching (`EmailAddress.canonicalIdentity`: case, `+tag` at providers with
    /// sub-addressing, Gmail's dots), so that "the friend is already a customer" also sees a customer behind another
    /// spelling of the same mailbox. Swift computes it; the backfill fills the contacts there are, in pages.
    static let v11ContactIdentity = Migration(
        id: 11, name: "contact_identity",
        backfill: { tx in
            var after: Int64 = 0
            while true {
                let rows = try await tx.query(
                    "SELECT id, email_normalized FROM contacts WHERE id > ? AND erased_at IS NULL ORDER BY id LIMIT 500",
                    after)
                guard let last = rows.last else { return }
                for row in rows {
                    guard let email = try? EmailAddress(row.text("email_normalized")) else { continue }
                    try await tx.execute(
                        "UPDATE contacts SET identity = ? WHERE id = ?", email.canonicalIdentity, row.int("id"))
                }
                after = last.int("id")
            }
        }
    ) { _ in
        [
            "ALTER TABLE contacts ADD COLUMN identity TEXT",
            "CREATE INDEX contacts_identity ON contacts (workspace_id, identity)",
        ]
    }

    /// The credit ledger also records what the shop's checkout spends (`redemption`, a debit per order) and gives
    /// back (`release`, when that order is cancelled), so that the balance is the sum of one table's rows. Those rows
    /// name the order instead of a reward. Both engines change a CHECK constraint only by rebuilding the table; the
    /// rows are copied in their order, with new ids (nothing refers to them), so PostgreSQL's identity stays ahead.
    static let v10CreditRedemptions = Migration(id: 10, name: "credit_redemptions") { _ in
        [
            """
            CREATE TABLE referral_credit_v10 (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              contact_id BIGINT NOT NULL REFERENCES contacts(id),
              reward_id BIGINT REFERENCES referral_rewards(id),
              order_ref TEXT,
              kind TEXT NOT NULL CHECK (kind IN ('booking', 'reversal', 'redemption', 'release')),
              delta_minor BIGINT NOT NULL,
              currency TEXT NOT NULL,
              at BIGINT NOT NULL,
              CHECK ((kind IN ('booking', 'reversal') AND reward_id IS NOT NULL AND order_ref IS NULL)
                OR (kind IN ('redemption', 'release') AND reward_id IS NULL AND order_ref IS NOT NULL)),
              UNIQUE (reward_id, kind),
              UNIQUE (workspace_id, order_ref, kind)
            )
            """,
            """
            INSERT INTO referral_credit_v10 (workspace_id, contact_id, reward_id, kind, delta_minor, currency, at)
            SELECT workspace_id, contact_id, reward_id, kind, delta_minor, currency, at FROM referral_credit ORDER BY id
            """,
            "DROP TABLE referral_credit",
            "ALTER TABLE referral_credit_v10 RENAME TO referral_credit",
            "CREATE INDEX referral_credit_contact ON referral_credit (workspace_id, contact_id)",
        ]
    }

    /// Clicks counted per advocate and UTC day, kept by the click flush in the transaction that writes the clicks,
    /// for the admin list, the figures and the chart; the click rows keep one index, the device one attribution
    /// needs. Counting an advocate's clicks read every one of them (through `referral_clicks_advocate`), and every
    /// click was written into that index too (docs/decisions/0024-click-days.md).
    static let v12ClickDays = Migration(id: 12, name: "click_days") { _ in
        [
            """
            CREATE TABLE referral_click_days (
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              advocate_id BIGINT NOT NULL REFERENCES advocates(id),
              day BIGINT NOT NULL,
              clicks BIGINT NOT NULL,
              PRIMARY KEY (advocate_id, day)
            )
            """,
            """
            INSERT INTO referral_click_days (workspace_id, advocate_id, day, clicks)
            SELECT workspace_id, advocate_id, at / 86400000, COUNT(*) FROM referral_clicks
            GROUP BY workspace_id, advocate_id, at / 86400000
            """,
            "CREATE INDEX referral_click_days_workspace ON referral_click_days (workspace_id, day)",
            "DROP INDEX referral_clicks_advocate",
        ]
    }

    /// A DKIM key signs from its activation on. A workspace's first key is active at once; a later one waits until
    /// its DNS record is published and `reciprocity dkim activate` says so, so that a rotation never signs with a
    /// selector receivers cannot look up yet. The keys there are were used newest first: all active, in that order.
    static let v13DKIMActivation = Migration(id: 13, name: "dkim_activation") { _ in
        [
            "ALTER TABLE dkim_keys ADD COLUMN activated_at BIGINT",
            "UPDATE dkim_keys SET activated_at = created_at",
        ]
    }

    /// The creditor of an exported payout as it went to the bank (name, IBAN, the code in the remittance text): a
    /// booking record (§147 AO, §257 HGB) that a later change of the advocate's details, or their erasure, must not
    /// rewrite. Exported payouts so far get the advocate's current details, the best record there is.
    static let v14PayoutCreditors = Migration(id: 14, name: "payout_creditors") { _ in
        [
            "ALTER TABLE referral_payouts ADD COLUMN creditor_name TEXT",
            "ALTER TABLE referral_payouts ADD COLUMN creditor_iban TEXT",
            "ALTER TABLE referral_payouts ADD COLUMN creditor_code TEXT",
            """
            UPDATE referral_payouts SET
              creditor_name = (SELECT a.payout_name FROM advocates a WHERE a.id = referral_payouts.advocate_id),
              creditor_iban = (SELECT a.payout_iban FROM advocates a WHERE a.id = referral_payouts.advocate_id),
              creditor_code = (SELECT a.code FROM advocates a WHERE a.id = referral_payouts.advocate_id)
            WHERE batch_id IS NOT NULL
            """,
        ]
    }

    /// The retention purge (`Store.purgeMailBodies`) finds the bodies still kept, oldest first, without reading the
    /// rows whose body is gone: a partial index on the time of their last change.
    static let v15OutboxBodies = Migration(id: 15, name: "outbox_bodies") { _ in
        ["CREATE INDEX outbox_bodies ON outbox (updated_at) WHERE message IS NOT NULL"]
    }

    /// A user of the installation who is not a member of a workspace joins it only when they accept: an owner who
    /// types an address that has an account invites that account, and it sees the invitation after its next login.
    static let v16Invitations = Migration(id: 16, name: "invitations") { _ in
        [
            """
            CREATE TABLE invitations (
              id {pk},
              workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
              user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
              role TEXT NOT NULL CHECK (role IN ('owner', 'marketer', 'support')),
              invited_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
              created_at BIGINT NOT NULL,
              UNIQUE (workspace_id, user_id)
            )
            """,
            "CREATE INDEX invitations_user ON invitations (user_id)",
        ]
    }
}
