import Logging
import ReciprocityCore
import Testing

@testable import App
@testable import Web

@Suite struct LogLines {
    struct Boom: Error, CustomStringConvertible { var description: String { "disk full" } }

    @Test func metadataIsSortedTheEventsWinAndErrorsAreSpelledOut() {
        let event = LogEvent(
            level: .error, message: "write failed", error: Boom(), metadata: ["request_id": "r2", "b": "1"],
            source: "Web", file: #fileID, function: #function, line: #line)
        let line = LineLogHandler.line(
            label: "reciprocity", event: event, metadata: ["request_id": "r1", "a": "0"],
            timestamp: "2026-11-22T10:00:00+0000")
        #expect(
            line
                == "2026-11-22T10:00:00+0000 error reciprocity: a=0 b=1 error.message=disk full "
                + "error.type=WebTests.LogLines.Boom request_id=r2 [Web] write failed\n")
    }

    @Test func noMetadataLeavesNoGap() {
        let event = LogEvent(
            level: .info, message: "serving", metadata: nil, source: "App", file: #fileID, function: #function,
            line: #line)
        #expect(
            LineLogHandler.line(label: "reciprocity", event: event, metadata: [:], timestamp: "T")
                == "T info reciprocity: [App] serving\n")
    }

    @Test func settingMetadataKeepsEveryKey() {
        var handler = LineLogHandler(label: "x", level: .debug, metadataProvider: nil)
        handler[metadataKey: "hb.request.id"] = "1"
        handler[metadataKey: "request_id"] = "abc"
        #expect(handler.metadata.count == 2)
        #expect(handler[metadataKey: "request_id"] == "abc")
    }
}

@Suite struct RequestIDRules {
    @Test func idsAreDistinctNotSequentialAndReadable() {
        let ids = Web.RequestIDs(random: SystemRandom())
        let drawn = (0..<10_000).map { _ in ids.next() }
        #expect(Set(drawn).count == drawn.count)
        #expect(drawn.allSatisfy { $0.count == 13 && $0.allSatisfy { $0.isLowercase || $0.isNumber } })
        // Consecutive ids share no long prefix: they do not count up visibly.
        let shared = zip(drawn, drawn.dropFirst()).filter { $0.prefix(6) == $1.prefix(6) }.count
        #expect(shared < 5)
    }
}
