import XCTest

@testable import ReciprocityCore

/// Checks the encoder against the layout of ISO/IEC 18004 read back from the modules, with the positions and
/// constants written out here independently of the encoder.
final class QRCodeTests: XCTestCase {
    let link = "http://127.0.0.1:8080/r/ANNA-7K3Q"
    let levels: [QRCode.ErrorCorrection] = [.low, .medium, .quartile, .high]

    // MARK: Versions and capacity

    func testSizeForKnownVersions() throws {
        let hello = try QRCode(text: "HELLO WORLD")
        XCTAssertEqual(hello.version, 1)
        XCTAssertEqual(hello.size, 21)
        XCTAssertEqual(hello.modules.count, 21 * 21)

        // Byte capacities of ISO/IEC 18004 table 7 (L, M, Q, H): the largest text stays in the version, one byte more
        // needs the next.
        let capacities: [Int: [Int]] = [
            1: [17, 14, 11, 7], 2: [32, 26, 20, 14], 7: [154, 122, 86, 64], 9: [230, 180, 130, 98],
            10: [271, 213, 151, 119], 27: [1465, 1125, 805, 625], 40: [2953, 2331, 1663, 1273],
        ]
        for (version, bytes) in capacities {
            for (level, capacity) in zip(levels, bytes) {
                let full = try QRCode(text: String(repeating: "a", count: capacity), errorCorrection: level)
                XCTAssertEqual(full.version, version, "\(capacity) bytes at \(level)")
                XCTAssertEqual(full.size, 4 * version + 17)
                if version < 40 {
                    let over = try QRCode(text: String(repeating: "a", count: capacity + 1), errorCorrection: level)
                    XCTAssertEqual(over.version, version + 1, "\(capacity + 1) bytes at \(level)")
                }
            }
        }
    }

    func testTooLong() {
        XCTAssertThrowsError(try QRCode(text: String(repeating: "a", count: 3000), errorCorrection: .high)) { error in
            XCTAssertEqual(error as? QRCode.TooLong, QRCode.TooLong())
        }
        XCTAssertThrowsError(try QRCode(text: String(repeating: "a", count: 2954), errorCorrection: .low))
        XCTAssertNoThrow(try QRCode(text: String(repeating: "a", count: 2953), errorCorrection: .low))
    }

    // MARK: Function patterns

    func testFinderPatternsAtThreeCorners() throws {
        for text in ["HELLO WORLD", link, String(repeating: "x", count: 300)] {
            let qr = try QRCode(text: text)
            let n = qr.size
            for (left, top) in [(0, 0), (n - 7, 0), (0, n - 7)] {
                for dy in -1...7 {
                    for dx in -1...7 {
                        let (x, y) = (left + dx, top + dy)
                        guard (0..<n).contains(x), (0..<n).contains(y) else { continue }
                        // 7 × 7 dark ring, light ring, 3 × 3 dark core; the separator around it is light.
                        let ring = max(abs(dx - 3), abs(dy - 3))
                        XCTAssertEqual(qr.isDark(x: x, y: y), ring == 0 || ring == 1 || ring == 3, "(\(x), \(y))")
                    }
                }
            }
            for i in 8..<(n - 8) {
                XCTAssertEqual(qr.isDark(x: i, y: 6), i % 2 == 0, "horizontal timing at \(i)")
                XCTAssertEqual(qr.isDark(x: 6, y: i), i % 2 == 0, "vertical timing at \(i)")
            }
            XCTAssertTrue(qr.isDark(x: 8, y: n - 8), "dark module")
            XCTAssertFalse(qr.isDark(x: -1, y: 0), "outside is the light quiet zone")
        }
    }

    func testAlignmentPatternCentres() {
        // ISO/IEC 18004 annex E.
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 1), [])
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 2), [6, 18])
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 7), [6, 22, 38])
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 32), [6, 34, 60, 86, 112, 138])
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 36), [6, 24, 50, 76, 102, 128, 154])
        XCTAssertEqual(QRCode.alignmentPatternCentres(version: 40), [6, 30, 58, 86, 114, 142, 170])
    }

    // MARK: Format and version information

    func testFormatInformationMatchesLevelAndMask() throws {
        // Format bits for the levels: L 01, M 00, Q 11, H 10.
        let levelBits: [QRCode.ErrorCorrection: Int] = [.low: 0b01, .medium: 0b00, .quartile: 0b11, .high: 0b10]
        for level in levels {
            let qr = try QRCode(text: link, errorCorrection: level)
            let (first, second) = formatInformation(qr)
            XCTAssertEqual(first, second, "both copies agree")
            let unmasked = first ^ 0x5412
            XCTAssertEqual(gf2Remainder(unmasked, 0x537), 0, "a BCH(15,5) code word")
            XCTAssertEqual(unmasked >> 13, levelBits[level], "level \(level)")

            // The mask the format information names is the one applied: undoing it yields the first codeword, byte
            // mode 0100 and the high half of the count. (The next codeword comes from the next block, if any.)
            let mask = (unmasked >> 10) & 0b111
            let header = firstDataBits(qr, count: 8, mask: mask)
            XCTAssertEqual(header, bits(0b0100, count: 4) + bits(link.utf8.count >> 4, count: 4), "mask \(mask)")
        }
    }

    func testChosenMaskHasTheLowestPenalty() throws {
        for (text, level) in [(link, QRCode.ErrorCorrection.medium), ("Grüße", .high), (link + "?ref=X", .low)] {
            let qr = try QRCode(text: text, errorCorrection: level)
            let bytes = Array(text.utf8)
            let data = QRCode.dataCodewords(bytes, version: qr.version, level)
            var unmasked = QRCode.Symbol(version: qr.version)
            unmasked.placeCodewords(QRCode.withErrorCorrection(data, version: qr.version, level))
            let candidates = (0..<8).map { mask in
                var symbol = unmasked
                symbol.applyMask(mask)
                symbol.drawFormatInformation(level, mask: mask)
                return symbol.modules
            }
            let penalties = candidates.map { QRCode.penalty(modules: $0, size: qr.size) }
            let chosen = (formatInformation(qr).first ^ 0x5412) >> 10 & 0b111
            XCTAssertEqual(penalties[chosen], penalties.min(), "penalties \(penalties)")
            XCTAssertEqual(candidates[chosen], qr.modules)
        }
    }

    func testNonASCIITextDeclaresUTF8() throws {
        let qr = try QRCode(text: "Grüße")
        XCTAssertEqual(qr.version, 1, "a single block: the codewords are in order")
        let mask = (formatInformation(qr).first ^ 0x5412) >> 10 & 0b111
        // ECI mode 0111, assignment 26 (UTF-8), byte mode 0100, 7 bytes.
        let expected = bits(0b0111, count: 4) + bits(26, count: 8) + bits(0b0100, count: 4) + bits(7, count: 8)
        XCTAssertEqual(firstDataBits(qr, count: 24, mask: mask), expected)
    }

    func testVersionInformationForLargeSymbols() throws {
        let small = try QRCode(text: link)
        XCTAssertLessThan(small.version, 7)

        let seven = try QRCode(text: String(repeating: "v", count: 110))
        XCTAssertEqual(seven.version, 7)
        XCTAssertEqual(versionInformation(seven).bottomLeft, 0x07C94, "ISO/IEC 18004 annex D, version 7")

        let large = try QRCode(text: String(repeating: "0123456789", count: 30))
        XCTAssertGreaterThanOrEqual(large.version, 7)
        let (bottomLeft, topRight) = versionInformation(large)
        XCTAssertEqual(bottomLeft, topRight, "both copies agree")
        XCTAssertEqual(bottomLeft >> 12, large.version)
        XCTAssertEqual(gf2Remainder(bottomLeft, 0x1F25), 0, "a BCH(18,6) code word")
    }

    // MARK: Codewords, error correction and penalty

    func testDataCodewords() {
        // 0100, count 00001011, the bytes of "HELLO WORLD", terminator 0000 — a nibble out of step — then pad
        // codewords to the 16 data codewords of 1-M.
        XCTAssertEqual(
            QRCode.dataCodewords(Array("HELLO WORLD".utf8), version: 1, .medium),
            [0x40, 0xB4, 0x84, 0x54, 0xC4, 0xC4, 0xF2, 0x05, 0x74, 0xF5, 0x24, 0xC4, 0x40, 0xEC, 0x11, 0xEC])
        // ECI 0111 00011010, 0100, count 7, the UTF-8 bytes, now byte-aligned: the terminator and the zero bits up to
        // the byte boundary make a whole 0x00 codeword.
        XCTAssertEqual(
            QRCode.dataCodewords(Array("Grüße".utf8), version: 1, .medium),
            [0x71, 0xA4, 0x07, 0x47, 0x72, 0xC3, 0xBC, 0xC3, 0x9F, 0x65, 0x00, 0xEC, 0x11, 0xEC, 0x11, 0xEC])
    }

    func testCodewordAndRemainderBitCounts() {
        // ISO/IEC 18004 table 1: codewords per version and the remainder bits left over.
        let codewords = [1: 26, 2: 44, 6: 172, 7: 196, 14: 581, 21: 1156, 28: 1921, 35: 2876, 40: 3706]
        let remainderBits = [1: 0, 2: 7, 6: 7, 7: 0, 14: 3, 21: 4, 28: 3, 35: 0, 40: 0]
        for (version, count) in codewords {
            XCTAssertEqual(QRCode.rawDataModules(version: version) / 8, count, "version \(version)")
            XCTAssertEqual(QRCode.rawDataModules(version: version) % 8, remainderBits[version], "version \(version)")
        }
    }

    func testBlocksAndInterleaving() {
        // 5-Q: 62 data codewords in blocks of 15, 15, 16 and 16, each with 18 error-correction codewords.
        let data = (0..<62).map { UInt8($0) }
        let blocks = [Array(data[0..<15]), Array(data[15..<30]), Array(data[30..<46]), Array(data[46..<62])]
        let result = QRCode.withErrorCorrection(data, version: 5, .quartile)
        XCTAssertEqual(result.count, 134)
        let interleavedData = (0..<15).flatMap { i in blocks.map { $0[i] } } + [blocks[2][15], blocks[3][15]]
        XCTAssertEqual(Array(result[..<62]), interleavedData)
        let generator = QRCode.ReedSolomon.generator(degree: 18)
        for (index, block) in blocks.enumerated() {
            let errorCorrection = stride(from: 62 + index, to: 134, by: 4).map { result[$0] }
            XCTAssertEqual(errorCorrection, QRCode.ReedSolomon.remainder(of: block, dividedBy: generator))
        }
    }

    func testReedSolomonKnownVector() {
        // "HELLO WORLD" as 1-M in alphanumeric mode: data and error-correction codewords of the well-known worked
        // example (thonky.com's QR code tutorial).
        let data: [UInt8] = [32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17]
        let generator = QRCode.ReedSolomon.generator(degree: 10)
        XCTAssertEqual(
            QRCode.ReedSolomon.remainder(of: data, dividedBy: generator),
            [196, 35, 39, 119, 235, 215, 231, 226, 93, 23])
    }

    func testPenaltyRules() {
        // All light, 21 × 21: 42 runs of 21 (3 + 16 each), 400 2 × 2 blocks (3 each), no finder-like pattern,
        // 0 % dark (10 steps of 5 % from 50 %).
        XCTAssertEqual(QRCode.penalty(modules: Array(repeating: false, count: 441), size: 21), 42 * 19 + 400 * 3 + 100)
        // A checkerboard has no runs, no blocks, no finder-like patterns and 221 of 441 dark.
        let checkerboard = (0..<441).map { ($0 / 21 + $0 % 21) % 2 == 0 }
        XCTAssertEqual(QRCode.penalty(modules: checkerboard, size: 21), 0)

        // Rule 3: 1011101 with four light modules on a side, once per side; beyond the line is light quiet zone.
        func line(_ pattern: String) -> [Bool] { pattern.map { $0 == "1" } }
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("000010111010000")), 2)
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("1011101")), 2)
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("110111010000")), 1)
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("00010111010001")), 1)
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("1000101110100011")), 0)
        XCTAssertEqual(QRCode.finderLikePatterns(in: line("00001011001000000")), 0)
    }

    func testMaskPatterns() {
        for mask in 0..<8 {
            for y in 0..<12 {
                for x in 0..<12 {
                    XCTAssertEqual(
                        QRCode.maskInverts(mask, x: x, y: y), maskCondition(mask, row: y, column: x),
                        "mask \(mask) at (\(x), \(y))")
                }
            }
        }
    }

    // MARK: SVG

    func testSVG() throws {
        let qr = try QRCode(text: link + "?ref=ANNA-7K3Q")
        let svg = qr.svg(moduleSize: 5, title: "Scan <me> & \"share\"")
        XCTAssertTrue(svg.hasPrefix("<svg"))
        XCTAssertTrue(svg.hasSuffix("</svg>\n"))
        XCTAssertEqual(svg.components(separatedBy: "<path").count - 1, 1, "exactly one path")
        XCTAssertTrue(svg.contains("<title>Scan &lt;me&gt; &amp; &quot;share&quot;</title>"))
        XCTAssertTrue(svg.contains("aria-label=\"Scan &lt;me&gt; &amp; &quot;share&quot;\""))
        XCTAssertFalse(svg.contains("<me>"))
        let side = qr.size + 8
        XCTAssertTrue(svg.contains("width=\"\(side * 5)\" height=\"\(side * 5)\""))
        XCTAssertTrue(svg.contains("viewBox=\"0 0 \(side) \(side)\""))
        XCTAssertTrue(svg.contains("shape-rendering=\"crispEdges\""))
        XCTAssertTrue(svg.contains("fill=\"#fff\""))

        // The path's rectangles, one per horizontal run, cover exactly the dark modules, 4 modules in.
        let d = try XCTUnwrap(svg.components(separatedBy: " d=\"").last?.components(separatedBy: "\"").first)
        var painted = Array(repeating: false, count: qr.size * qr.size)
        var rectangles = 0
        for rectangle in d.split(separator: "z") {
            let parts = rectangle.dropFirst().split(separator: "h")  // "4,4", "7v1", "-7"
            XCTAssertEqual(parts.count, 3, String(rectangle))
            let corner = parts[0].split(separator: ",").compactMap { Int($0) }
            let width = try XCTUnwrap(Int(parts[1].dropLast(2)))
            XCTAssertEqual(parts[1].suffix(2), "v1")
            XCTAssertEqual(String(parts[2]), "-\(width)")
            for x in corner[0] - 4..<corner[0] - 4 + width {
                XCTAssertFalse(painted[(corner[1] - 4) * qr.size + x], "rectangles do not overlap")
                painted[(corner[1] - 4) * qr.size + x] = true
            }
            rectangles += 1
        }
        XCTAssertEqual(painted, qr.modules)
        let runs = (0..<qr.size).reduce(0) { count, y in
            count + (0..<qr.size).filter { x in qr.isDark(x: x, y: y) && !qr.isDark(x: x - 1, y: y) }.count
        }
        XCTAssertEqual(rectangles, runs, "runs merged")
    }

    // MARK: Reading the symbol back

    /// Both copies of the 15 format bits, most significant first (ISO/IEC 18004 figure 25).
    private func formatInformation(_ qr: QRCode) -> (first: Int, second: Int) {
        let n = qr.size
        let alongRow8 = [(0, 8), (1, 8), (2, 8), (3, 8), (4, 8), (5, 8), (7, 8), (8, 8)]
        let upColumn8 = [(8, 7), (8, 5), (8, 4), (8, 3), (8, 2), (8, 1), (8, 0)]
        let first = alongRow8 + upColumn8
        let second = (0..<7).map { (8, n - 1 - $0) } + (0..<8).map { (n - 8 + $0, 8) }
        return (read(qr, first), read(qr, second))
    }

    /// Both 6 × 3 blocks of version information: bit i at column i / 3, row size − 11 + i % 3, and transposed.
    private func versionInformation(_ qr: QRCode) -> (bottomLeft: Int, topRight: Int) {
        let n = qr.size
        let bottomLeft = (0..<18).reversed().map { ($0 / 3, n - 11 + $0 % 3) }
        let topRight = (0..<18).reversed().map { (n - 11 + $0 % 3, $0 / 3) }
        return (read(qr, bottomLeft), read(qr, topRight))
    }

    private func read(_ qr: QRCode, _ positions: [(Int, Int)]) -> Int {
        positions.reduce(0) { $0 << 1 | (qr.isDark(x: $1.0, y: $1.1) ? 1 : 0) }
    }

    /// The first data bits, unmasked: they run up the two rightmost columns from the bottom-right corner, right
    /// module first, clear of function patterns in every version for the first 24 bits.
    private func firstDataBits(_ qr: QRCode, count: Int, mask: Int) -> [Bool] {
        (0..<count).map { k in
            let (row, column) = (qr.size - 1 - k / 2, qr.size - 1 - k % 2)
            return qr.isDark(x: column, y: row) != maskCondition(mask, row: row, column: column)
        }
    }

    /// ISO/IEC 18004 table 10, i the row and j the column.
    private func maskCondition(_ mask: Int, row i: Int, column j: Int) -> Bool {
        let conditions: [Bool] = [
            (i + j) % 2 == 0, i % 2 == 0, j % 3 == 0, (i + j) % 3 == 0, (i / 2 + j / 3) % 2 == 0,
            (i * j) % 2 + (i * j) % 3 == 0, ((i * j) % 2 + (i * j) % 3) % 2 == 0,
            ((i * j) % 3 + (i + j) % 2) % 2 == 0,
        ]
        return conditions[mask]
    }

    private func bits(_ value: Int, count: Int) -> [Bool] {
        (0..<count).reversed().map { (value >> $0) & 1 == 1 }
    }

    /// The remainder of polynomial division over GF(2), bit patterns as polynomials.
    private func gf2Remainder(_ value: Int, _ divisor: Int) -> Int {
        func degree(_ polynomial: Int) -> Int { Int.bitWidth - polynomial.leadingZeroBitCount - 1 }
        var remainder = value
        while remainder != 0 && degree(remainder) >= degree(divisor) {
            remainder ^= divisor << (degree(remainder) - degree(divisor))
        }
        return remainder
    }
}
