import NIOCore

/// The fast path's GET routes answered from a connection's bytes, before NIO's HTTP parser
/// (docs/decisions/0012-fast-path-bytes.md).
///
/// Parsing a request into NIO's `HTTPRequestHead`, converting it to `HTTPTypes`, and encoding the answer back cost
/// more than the rest of the bare redirect's own work. This handler sits in front of the HTTP codec and reads only the
/// plainest request (`PlainGet`): when every byte of a read is such a request, and a fast route answers each, the
/// answers go straight to the socket. At the first byte it does not answer (a request of another form, another route,
/// a route that declines, a request cut off by the read, a peer that does not read its answers) it hands that byte and
/// everything after it to the parser, for the rest of the connection. So the parser always starts at the beginning of
/// a request, the router answers in order after the answers made here, and NIO's and Hummingbird's handling of
/// everything unusual stays theirs.
final class FastPathBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let fastPath: FastPath
    /// Everything from here on goes to the parser.
    private(set) var handedOver = false
    private var needsFlush = false
    private var date = DateHeader()
    private var peerIP: String?

    static let maxAnswerBytes = 64 * 1024

    init(_ fastPath: FastPath) { self.fastPath = fastPath }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !handedOver else { return context.fireChannelRead(data) }
        var buffer = unwrapInboundIn(data)
        // A peer whose socket buffer is full goes to the router, whose writer waits for it and stops reading. At
        // most `maxAnswerBytes` of answers per read: behind TLS, writes count against the socket only when flushed.
        var written = 0
        while buffer.readableBytes > 0, context.channel.isWritable, written < Self.maxAnswerBytes {
            let peer = peerIP ?? context.channel.remoteAddress?.ipAddress ?? "unknown"
            peerIP = peer
            let answered: (length: Int, answer: FastAnswer, requestID: String)? = buffer.withUnsafeReadableBytes {
                bytes in
                guard let get = PlainGet.parse(bytes) else { return nil }
                var request = FastRequest(peerIP: peer)
                request.userAgent = get.userAgent.map { get.string(bytes, $0) }
                request.forwardedFor = get.forwardedFor.map { get.string(bytes, $0) }
                request.requestID = get.requestID.map { get.string(bytes, $0) }
                let target = Substring(get.string(bytes, get.target))
                guard let (answer, id) = fastPath.answer(target: target, request: request, way: .bytes) else {
                    return nil
                }
                return (get.length, answer, id)
            }
            guard let answered else { break }
            buffer.moveReaderIndex(forwardBy: answered.length)
            let out = answered.answer.bytes(
                requestID: answered.requestID, date: date.current(), allocator: context.channel.allocator)
            written += out.readableBytes
            context.write(NIOAny(out), promise: nil)
            needsFlush = true
        }
        guard buffer.readableBytes > 0 else { return }
        handedOver = true
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelRead(NIOAny(buffer))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }
}

/// A request head of the plainest form, read from bytes: `GET`, an origin-form target, `HTTP/1.1`, and header lines
/// of a token, a colon and a value of visible ASCII, spaces and tabs, each ended by CRLF, then an empty line. It has
/// no body (`Content-Length`, if any, is 0; no `Transfer-Encoding`), keeps the connection open (`Connection`, if any,
/// is keep-alive), and asks for no `Upgrade` or `Expect`. At most 8 KiB and 64 header lines. Anything else (and a
/// head not complete in the bytes given) is not read here: `parse` returns nil and NIO's parser gets it.
struct PlainGet: Equatable {
    /// The head's length in bytes, up to and including the empty line.
    var length: Int
    var target: Range<Int>
    var userAgent: Range<Int>?
    var forwardedFor: Range<Int>?
    var requestID: Range<Int>?

    static let maxLength = 8192
    static let maxFields = 64

    func string(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static let requestLineStart: [UInt8] = Array("GET /".utf8)
    private static let version: [UInt8] = Array(" HTTP/1.1\r\n".utf8)
    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")
    private static let space = UInt8(ascii: " ")
    private static let tab = UInt8(ascii: "\t")

    /// The head at the start of `bytes`, or nil.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> PlainGet? {
        let n = min(bytes.count, maxLength)
        guard n >= requestLineStart.count, bytes.starts(with: requestLineStart) else { return nil }
        // The target: visible ASCII up to the space.
        var i = 4
        while i < n, bytes[i] != space {
            guard bytes[i] > 0x20, bytes[i] < 0x7F else { return nil }
            i += 1
        }
        let target = 4..<i
        guard n - i >= version.count,
            UnsafeRawBufferPointer(rebasing: bytes[i..<i + version.count]).elementsEqual(version)
        else { return nil }
        i += version.count
        var get = PlainGet(length: 0, target: target)
        var fields = 0
        var contentLength = false
        var connection = false
        while true {
            guard i + 1 < n else { return nil }
            if bytes[i] == cr {
                guard bytes[i + 1] == lf else { return nil }
                get.length = i + 2
                return get
            }
            fields += 1
            guard fields <= maxFields else { return nil }
            let nameStart = i
            while i < n, isTokenByte(bytes[i]) { i += 1 }
            guard i < n, i > nameStart, bytes[i] == UInt8(ascii: ":") else { return nil }
            let name = nameStart..<i
            i += 1
            while i < n, bytes[i] == space || bytes[i] == tab { i += 1 }
            let valueStart = i
            while i < n, bytes[i] != cr {
                guard bytes[i] == tab || (bytes[i] >= 0x20 && bytes[i] < 0x7F) else { return nil }
                i += 1
            }
            guard i + 1 < n, bytes[i + 1] == lf else { return nil }
            var valueEnd = i
            while valueEnd > valueStart, bytes[valueEnd - 1] == space || bytes[valueEnd - 1] == tab { valueEnd -= 1 }
            let value = valueStart..<valueEnd
            i += 2
            // Header names are case-insensitive; each one read here may come once.
            switch Field(bytes, name) {
            case .userAgent:
                guard get.userAgent == nil else { return nil }
                get.userAgent = value
            case .forwardedFor:
                guard get.forwardedFor == nil else { return nil }
                get.forwardedFor = value
            case .requestID:
                guard get.requestID == nil else { return nil }
                get.requestID = value
            case .contentLength:
                guard !contentLength, value.count == 1, bytes[value.lowerBound] == UInt8(ascii: "0") else { return nil }
                contentLength = true
            case .connection:
                guard !connection, equalsIgnoringCase(bytes, value, "keep-alive") else { return nil }
                connection = true
            case .refused:
                return nil
            case .other:
                break
            }
        }
    }

    private enum Field {
        case userAgent, forwardedFor, requestID, contentLength, connection, refused, other

        private static let names: [(String, Field)] = [
            ("user-agent", .userAgent), ("x-forwarded-for", .forwardedFor), ("x-request-id", .requestID),
            ("content-length", .contentLength), ("connection", .connection), ("transfer-encoding", .refused),
            ("upgrade", .refused), ("expect", .refused),
            // llhttp reads `Proxy-Connection` as `Connection`.
            ("proxy-connection", .refused),
        ]

        init(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) {
            self = Self.names.first { PlainGet.equalsIgnoringCase(bytes, name, $0.0) }?.1 ?? .other
        }
    }

    /// Whether the bytes are `lowercase` (ASCII) in any case.
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercase: String)
        -> Bool
    {
        guard range.count == lowercase.utf8.count else { return false }
        return zip(range, lowercase.utf8).allSatisfy { index, expected in
            let byte = bytes[index]
            return byte == expected
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && byte | 0x20 == expected)
        }
    }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
