import App
import ArgumentParser
import Foundation
import ReciprocityCore
import Storage

@main
struct Reciprocity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reciprocity",
        abstract: "Give-first marketing, run honestly: lead magnets, referrals, reviews, thank-yous.",
        discussion: """
            Settings come from RECIPROCITY_* environment variables (see docs/configuration.md).
            With no settings, data lives in ./data/reciprocity.sqlite and the server listens on 127.0.0.1:8080.
            """,
        subcommands: [
            Serve.self, Worker.self, Migrate.self, WorkspaceCommand.self, UserCommand.self, APIKeyCommand.self,
            ContactCommand.self, DKIMCommand.self, MailCommand.self, BouncesCommand.self, ReviewsCommand.self,
            LeadsCommand.self,
            DemoCommand.self,
        ])
}

/// Runs a command body with the runtime, printing any failure as one line and exiting non-zero.
func run(migrate: Bool? = nil, _ body: (Runtime) async throws -> Void) async throws {
    do {
        let config = try await AppConfig.load()
        let runtime = try await Runtime.open(config, migrate: migrate)
        do {
            try await body(runtime)
        } catch {
            await runtime.close()
            throw error
        }
        await runtime.close()
    } catch let error as DomainError {
        fail("\(error.message)\(error.field.map { " (\($0))" } ?? "")")
    } catch let error as ConfigError {
        fail(error.description)
    } catch let error as StorageError {
        fail(error.description)
    } catch let error as ValidationError {
        throw error
    } catch {
        fail("\(error)")
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

/// Writes a line to standard output unbuffered, so log watchers (and tests) see it at once.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the web server and the job workers (migrates first unless RECIPROCITY_AUTO_MIGRATE=false).")

    func run() async throws {
        try await runCommand { rt in
            if let lines = try await Commands.firstRun(rt) { lines.forEach(say) }
            say("Reciprocity is listening on \(rt.config.baseURL) (database: \(rt.config.redactedDatabaseURL))")
            try await serve(runtime: rt)
        }
    }
}

/// `run` is shadowed inside commands by their own `run()`; this name reaches the shared one.
func runCommand(migrate: Bool? = nil, _ body: (Runtime) async throws -> Void) async throws {
    try await run(migrate: migrate, body)
}

struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run only the job workers and the scheduler.")
    func run() async throws {
        try await runCommand { rt in try await runWorkers(runtime: rt) }
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending database migrations.")
    func run() async throws {
        try await runCommand(migrate: false) { rt in say(try await Commands.migrate(rt)) }
    }
}

struct WorkspaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workspace", abstract: "Manage workspaces (shops or brands).",
        subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a workspace.")
        @Option(help: "Short name used in URLs: a–z, 0–9, hyphens.") var slug: String
        @Option(help: "Display name of the shop.") var name: String
        @Option(help: "Sender address for mails.") var senderEmail: String
        @Option(help: "Sender display name (default: the workspace name).") var senderName: String?
        @Option(help: "de or en.") var locale = "de"
        @Option(help: "IANA time zone.") var timeZone = "Europe/Berlin"
        @Option(help: "Imprint URL (Impressum).") var imprintUrl = ""
        @Option(help: "Privacy policy URL.") var privacyUrl = ""

        func run() async throws {
            try await runCommand { rt in
                let w = try await Commands.createWorkspace(
                    rt, slug: slug, name: name, senderEmail: senderEmail, senderName: senderName, locale: locale,
                    timeZone: timeZone, imprintURL: imprintUrl, privacyURL: privacyUrl)
                say("Created workspace \(w.slug) (\(w.name)), id \(w.id).")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List workspaces.")
        func run() async throws {
            try await runCommand { rt in
                for w in try await rt.store.workspaces() { say("\(w.slug)\t\(w.name)\t\(w.locale)\t\(w.timeZone)") }
            }
        }
    }
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Manage admin users.", subcommands: [Create.self, ResetPassword.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user in a workspace (or add an existing one). Prints a one-time password.")
        @Option(help: "Workspace slug.") var workspace: String
        @Option(help: "Login email.") var email: String
        @Option(help: "Display name.") var name: String?
        @Option(help: "owner, marketer or support.") var role: String = "owner"
        @Flag(help: "Read the password from standard input instead of generating a one-time password.")
        var passwordStdin = false

        func run() async throws {
            guard let role = Role(rawValue: role) else {
                throw ValidationError("--role must be owner, marketer or support.")
            }
            let password = passwordStdin ? readLine(strippingNewline: true) : nil
            try await runCommand { rt in
                let (user, oneTime) = try await Commands.createUser(
                    rt, workspace: workspace, email: email, name: name, role: role, password: password)
                say("User \(user.email) is \(role.rawValue) of \(workspace).")
                if let oneTime { say("One-time password: \(oneTime)") }
            }
        }
    }

    struct ResetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-password", abstract: "Set a new one-time password and end the user's sessions.")
        @Option(help: "Login email.") var email: String
        @Flag(help: "Read the new password from standard input.") var passwordStdin = false
        func run() async throws {
            let password = passwordStdin ? readLine(strippingNewline: true) : nil
            try await runCommand { rt in
                let oneTime = try await Commands.resetPassword(rt, email: email, password: password)
                say("Password of \(email) was reset.")
                if let oneTime { say("One-time password: \(oneTime)") }
            }
        }
    }
}

struct APIKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey", abstract: "Manage API keys.", subcommands: [Create.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key. It is printed once.")
        @Option(help: "Workspace slug.") var workspace: String
        @Option(help: "What the key is for.") var name: String
        @Option(help: "read or write.") var scope: String = "write"
        func run() async throws {
            guard let scope = APIScope(rawValue: scope) else { throw ValidationError("--scope must be read or write.") }
            try await runCommand { rt in
                let issued = try await Commands.createAPIKey(rt, workspace: workspace, name: name, scope: scope)
                say(issued.plaintext)
                FileHandle.standardError.write(
                    Data("Store this key now: it is not shown again. Scope: \(scope.rawValue).\n".utf8))
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key by its prefix (or the whole key).")
        @Argument(help: "The key's prefix, e.g. rcp_ab12cd34.") var prefix: String
        func run() async throws {
            try await runCommand { rt in
                try await Commands.revokeAPIKey(rt, prefix: prefix)
                say("Revoked.")
            }
        }
    }
}

struct ContactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contact", abstract: "Data-subject rights for one person.",
        subcommands: [Export.self, Erase.self, Object.self])

    /// Which person: the same two options for every right.
    struct Person: ParsableArguments {
        @Option(help: "Workspace slug.") var workspace: String
        @Option(help: "The person's email.") var email: String

        /// Exercises a right for this person, then says `done`.
        func exercise(_ right: (Runtime, String, String) async throws -> Void, done: String) async throws {
            try await runCommand { rt in
                try await right(rt, workspace, email)
                say(done)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print everything stored about a person as JSON (Art. 15).")
        @OptionGroup var person: Person
        func run() async throws {
            try await runCommand { rt in
                say(try await Commands.exportContact(rt, workspace: person.workspace, email: person.email))
            }
        }
    }

    struct Object: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record an objection (Art. 21): consents withdrawn, no marketing mail ever again.")
        @OptionGroup var person: Person
        func run() async throws {
            try await person.exercise(Commands.objectContact(_:workspace:email:), done: "Objection recorded.")
        }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Erase a person (Art. 17): PII gone, counts kept.")
        @OptionGroup var person: Person
        func run() async throws {
            try await person.exercise(Commands.eraseContact(_:workspace:email:), done: "Erased.")
        }
    }
}

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo", abstract: "Seed a German demo shop with products, customers and orders in every state.")
    @Option(help: "Workspace slug for the demo.") var slug = "demo"
    @Option(help: "Number of customers.") var customers = 200
    func run() async throws {
        try await runCommand { rt in
            if let lines = try await Commands.firstRun(rt) { lines.forEach(say) }
            let s = try await Demo.seed(rt, slug: slug, customers: customers)
            say("Demo workspace \(s.workspace.slug): \(s.customers) customers, \(s.orders) orders.")
        }
    }
}

struct DKIMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkim", abstract: "DKIM signing keys.", subcommands: [Generate.self, Activate.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Create a signing key for a workspace and print its DNS TXT record. The workspace's first key signs at once; a later one after `dkim activate`."
        )
        @Option(help: "Workspace slug.") var workspace = "shop"
        @Option(help: "The signing domain (d=), normally the sender's domain.") var domain: String
        @Option(help: "The selector (s=), e.g. s2026.") var selector: String
        @Option(help: "rsa-sha256 (2048 bits) or ed25519-sha256.") var algorithm = "rsa-sha256"
        func run() async throws {
            try await runCommand { rt in
                say(
                    try await Commands.generateDKIM(
                        rt, workspace: workspace, domain: domain, selector: selector, algorithm: algorithm))
            }
        }
    }

    struct Activate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sign with the key of this selector from now on (publish its DNS TXT record first).")
        @Option(help: "Workspace slug.") var workspace = "shop"
        @Option(help: "The selector (s=) of a key made by `dkim generate`.") var selector: String
        func run() async throws {
            try await runCommand { rt in
                say(try await Commands.activateDKIM(rt, workspace: workspace, selector: selector))
            }
        }
    }
}

struct MailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mail", abstract: "Send test mails and measure the mail engine.",
        subcommands: [SendTest.self, Bench.self])

    struct SendTest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "send-test",
            abstract: "Send one mail of a kind with sample values, through the outbox and RECIPROCITY_SMTP_URL.")
        @Option(help: "Workspace slug.") var workspace = "shop"
        @Option(help: ArgumentHelp(MessageKind.allCases.map(\.rawValue).joined(separator: ", ") + "."))
        var kind: String
        @Option(help: "Recipient address.") var to: String
        @Option(help: "de or en.") var locale = "de"
        @Option(help: "Recipient name, e.g. \"Jürgen Müller\".") var name: String?
        func run() async throws {
            try await runCommand { rt in
                say(
                    try await Commands.sendTestMail(
                        rt, workspace: workspace, kind: kind, to: to, locale: locale, name: name))
            }
        }
    }

    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Render, DKIM-sign and send N mails to an SMTP sink; prints one JSON line.")
        @Option(help: "Workspace slug (needs a DKIM key).") var workspace = "shop"
        @Option(help: "SMTP URL of the sink, e.g. smtp://127.0.0.1:2525?tls=none.") var smtpUrl: String
        @Option(help: "Recipient address.") var to = "sink@example.test"
        @Option(help: "Number of mails.") var count = 10_000
        @Option(help: "Concurrent SMTP sessions.") var concurrency = 8
        @Option(help: "Approximate mail size in bytes.") var size = 6_000
        @Flag(help: "Render and sign one mail and send it N times (measures the SMTP client alone).")
        var renderOnce = false
        func run() async throws {
            try await runCommand { rt in
                say(
                    try await Commands.benchMail(
                        rt, workspace: workspace, smtpURL: smtpUrl, to: to, count: max(1, count),
                        concurrency: max(1, concurrency), size: size, renderOnce: renderOnce))
            }
        }
    }
}

struct BouncesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bounces", abstract: "Bounces, complaints and mailto unsubscribes.", subcommands: [Import.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read DSNs (RFC 3464), complaint reports and unsubscribe mails from a Maildir's new/ folder.")
        @Option(help: "Path of the Maildir (the folder with new/, cur/, tmp/).") var maildir: String
        func run() async throws {
            try await runCommand { rt in say(try await Commands.importBounces(rt, maildir: maildir)) }
        }
    }
}

struct ReviewsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reviews", abstract: "Reviews: import old ones; benchmark scheduling.",
        subcommands: [Import.self, BenchSchedule.self])

    struct BenchSchedule: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-schedule",
            abstract: "Put N delivered orders and schedule their review requests; print the rate per slice.")
        @Option(help: "Workspace slug.") var workspace = "shop"
        @Option(help: "How many orders.") var orders = 100_000
        @Option(help: "Orders per reported slice.") var slice = 10_000
        func run() async throws {
            try await runCommand { rt in
                say(try await Commands.benchReviewScheduling(rt, workspace: workspace, orders: orders, slice: slice))
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import old reviews from CSV (columns: sku,product_name,rating,title,body,author,date).")
        @Option(help: "Workspace slug.") var workspace = "shop"
        @Option(help: "Where the reviews come from, shown with each (e.g. \"Trusted Shops\").") var source: String
        @Argument(help: "The CSV file (UTF-8, header row; ',' or ';').") var file: String
        func run() async throws {
            try await runCommand { rt in
                say(try await Commands.importReviews(rt, workspace: workspace, source: source, file: file))
            }
        }
    }
}

struct LeadsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leads", abstract: "Lead magnets: the disposable-domain blocklist; expire unconfirmed signups.",
        subcommands: [DisposableDomains.self, Expire.self])

    struct DisposableDomains: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "disposable-domains",
            abstract:
                "Add domains to the disposable-address blocklist (one per line; '#' comments), e.g. an updated list.")
        @Option(help: "The list file; '-' reads standard input.") var file: String
        func run() async throws {
            try await runCommand { rt in say(try await Commands.addDisposableDomains(rt, file: file)) }
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete unconfirmed signups past their expiry now (the worker also does this every minute).")
        func run() async throws {
            try await runCommand { rt in say("deleted \(try await rt.leads.service.expire()) expired signups") }
        }
    }
}
