import Foundation

/// A QR code symbol: a square of dark/light modules.
///
/// A from-scratch encoder for QR Code Model 2 (ISO/IEC 18004), byte mode only, which is all a referral link needs.
/// Encoding runs the steps of the standard in order:
///
/// 1. pick the smallest version (1…40) whose data capacity holds the UTF-8 bytes at the requested level;
/// 2. build the data bit stream: for non-ASCII text an ECI designator for UTF-8, then the byte-mode indicator,
///    character count, the bytes, terminator, pad codewords;
/// 3. split the data codewords into blocks, append Reed–Solomon error correction to each, interleave;
/// 4. draw the function patterns (finders, separators, timing, alignment, dark module, version information);
/// 5. place the codewords in the two-module-wide zigzag, leaving the remainder bits light;
/// 6. try all eight data masks, write the format information for each, keep the one with the lowest penalty.
public struct QRCode: Sendable, Equatable {
    /// The error-correction level: the share of codewords that may be lost and still be recovered
    /// (about 7 % for `low`, 15 % for `medium`, 25 % for `quartile`, 30 % for `high`).
    public enum ErrorCorrection: Sendable { case low, medium, quartile, high }

    /// The text needs more bytes than a version-40 symbol holds at the requested error-correction level.
    public struct TooLong: Error, Sendable, Equatable {}

    /// Modules per side (21 for version 1 … 177 for version 40).
    public let size: Int
    /// The symbol version, 1…40.
    public let version: Int
    /// row-major, size*size, true = dark
    public let modules: [Bool]

    /// Whether the module in column `x`, row `y` is dark. Coordinates outside the symbol are light: the quiet zone.
    public func isDark(x: Int, y: Int) -> Bool {
        guard (0..<size).contains(x), (0..<size).contains(y) else { return false }
        return modules[y * size + x]
    }

    /// Encodes UTF-8 bytes in byte mode (the smallest version that fits, versions 1...40), choosing the mask with the
    /// lowest penalty score per the standard.
    ///
    /// Byte mode carries no character set, and readers guess: short UTF-8 such as "Grüße" also reads as valid
    /// Shift JIS. So text with any non-ASCII byte starts with an ECI designator for UTF-8 (12 bits); ASCII text, every
    /// referral link, is encoded without one.
    public init(text: String, errorCorrection: ErrorCorrection = .medium) throws(QRCode.TooLong) {
        let bytes = Array(text.utf8)
        let fitting = (1...40).first {
            Self.dataBitCount(bytes, version: $0) <= Self.dataCodewordCount(version: $0, errorCorrection) * 8
        }
        guard let version = fitting else { throw TooLong() }

        let data = Self.dataCodewords(bytes, version: version, errorCorrection)
        let codewords = Self.withErrorCorrection(data, version: version, errorCorrection)

        var unmasked = Symbol(version: version)
        unmasked.placeCodewords(codewords)
        var best = unmasked
        var bestPenalty = Int.max
        for mask in 0..<8 {
            var candidate = unmasked
            candidate.applyMask(mask)
            candidate.drawFormatInformation(errorCorrection, mask: mask)
            let penalty = Self.penalty(modules: candidate.modules, size: candidate.size)
            if penalty < bestPenalty {
                best = candidate
                bestPenalty = penalty
            }
        }
        self.version = version
        self.size = best.size
        self.modules = best.modules
    }
}

// MARK: - Capacity and the error-correction table

extension QRCode.ErrorCorrection {
    /// The two bits that stand for the level in the format information (not in the order of the levels).
    var formatBits: Int {
        switch self {
        case .low: 0b01
        case .medium: 0b00
        case .quartile: 0b11
        case .high: 0b10
        }
    }

    /// The column of this level in `QRCode.ECTable`.
    var tableColumn: Int {
        switch self {
        case .low: 0
        case .medium: 1
        case .quartile: 2
        case .high: 3
        }
    }
}

extension QRCode {
    /// The error-correction characteristics of ISO/IEC 18004 table 9: for each version 1…40 (one line each) and level
    /// L, M, Q, H, the error-correction codewords per block and the number of blocks. Each block of a symbol gets the
    /// same number of error-correction codewords; when the codewords do not divide evenly, the later blocks hold one
    /// data codeword more than the earlier ones.
    enum ECTable {
        static let entries: [[(codewordsPerBlock: Int, blockCount: Int)]] = [
            [(7, 1), (10, 1), (13, 1), (17, 1)],  // 1
            [(10, 1), (16, 1), (22, 1), (28, 1)],  // 2
            [(15, 1), (26, 1), (18, 2), (22, 2)],  // 3
            [(20, 1), (18, 2), (26, 2), (16, 4)],  // 4
            [(26, 1), (24, 2), (18, 4), (22, 4)],  // 5
            [(18, 2), (16, 4), (24, 4), (28, 4)],  // 6
            [(20, 2), (18, 4), (18, 6), (26, 5)],  // 7
            [(24, 2), (22, 4), (22, 6), (26, 6)],  // 8
            [(30, 2), (22, 5), (20, 8), (24, 8)],  // 9
            [(18, 4), (26, 5), (24, 8), (28, 8)],  // 10
            [(20, 4), (30, 5), (28, 8), (24, 11)],  // 11
            [(24, 4), (22, 8), (26, 10), (28, 11)],  // 12
            [(26, 4), (22, 9), (24, 12), (22, 16)],  // 13
            [(30, 4), (24, 9), (20, 16), (24, 16)],  // 14
            [(22, 6), (24, 10), (30, 12), (24, 18)],  // 15
            [(24, 6), (28, 10), (24, 17), (30, 16)],  // 16
            [(28, 6), (28, 11), (28, 16), (28, 19)],  // 17
            [(30, 6), (26, 13), (28, 18), (28, 21)],  // 18
            [(28, 7), (26, 14), (26, 21), (26, 25)],  // 19
            [(28, 8), (26, 16), (30, 20), (28, 25)],  // 20
            [(28, 8), (26, 17), (28, 23), (30, 25)],  // 21
            [(28, 9), (28, 17), (30, 23), (24, 34)],  // 22
            [(30, 9), (28, 18), (30, 25), (30, 30)],  // 23
            [(30, 10), (28, 20), (30, 27), (30, 32)],  // 24
            [(26, 12), (28, 21), (30, 29), (30, 35)],  // 25
            [(28, 12), (28, 23), (28, 34), (30, 37)],  // 26
            [(30, 12), (28, 25), (30, 34), (30, 40)],  // 27
            [(30, 13), (28, 26), (30, 35), (30, 42)],  // 28
            [(30, 14), (28, 28), (30, 38), (30, 45)],  // 29
            [(30, 15), (28, 29), (30, 40), (30, 48)],  // 30
            [(30, 16), (28, 31), (30, 43), (30, 51)],  // 31
            [(30, 17), (28, 33), (30, 45), (30, 54)],  // 32
            [(30, 18), (28, 35), (30, 48), (30, 57)],  // 33
            [(30, 19), (28, 37), (30, 51), (30, 60)],  // 34
            [(30, 19), (28, 38), (30, 53), (30, 63)],  // 35
            [(30, 20), (28, 40), (30, 56), (30, 66)],  // 36
            [(30, 21), (28, 43), (30, 59), (30, 70)],  // 37
            [(30, 22), (28, 45), (30, 62), (30, 74)],  // 38
            [(30, 24), (28, 47), (30, 65), (30, 77)],  // 39
            [(30, 25), (28, 49), (30, 68), (30, 81)],  // 40
        ]

        static func entry(version: Int, _ level: ErrorCorrection) -> (codewordsPerBlock: Int, blockCount: Int) {
            entries[version - 1][level.tableColumn]
        }
    }

    /// Modules left for data and error correction once the function patterns are drawn. Starting from
    /// size² = 16v² + 136v + 289: the three finders with separators take 3 × 64, the timing patterns 2 × (size − 16),
    /// the two copies of the format information and the dark module 31, leaving 16v² + 128v + 64. An n × n grid of
    /// alignment patterns lacks the three corners that collide with finders, 25 modules each, and the 2(n − 2) that
    /// sit on a timing pattern share 5 modules with it; the two version-information blocks take 36.
    static func rawDataModules(version: Int) -> Int {
        var modules = (16 * version + 128) * version + 64
        if version >= 2 {
            let n = version / 7 + 2
            modules -= 25 * (n * n - 3) - 5 * 2 * (n - 2)
        }
        if version >= 7 {
            modules -= 36
        }
        return modules
    }

    /// Data codewords of a symbol: all codewords minus the error-correction ones. Remainder bits (the modules that do
    /// not fill a whole codeword) are not counted.
    static func dataCodewordCount(version: Int, _ level: ErrorCorrection) -> Int {
        let entry = ECTable.entry(version: version, level)
        return rawDataModules(version: version) / 8 - entry.codewordsPerBlock * entry.blockCount
    }

    /// Bits of the character count indicator in byte mode.
    static func characterCountBits(version: Int) -> Int {
        version <= 9 ? 8 : 16
    }

    /// Whether the bytes are declared UTF-8 with an ECI designator: when they are not plain ASCII.
    static func needsUTF8Designator(_ bytes: [UInt8]) -> Bool {
        bytes.contains { $0 >= 0x80 }
    }

    /// Bits of the encoded segments before the terminator: the optional ECI designator (mode indicator `0111` and
    /// the 8-bit assignment number), the 4-bit byte-mode indicator, the character count and the bytes.
    static func dataBitCount(_ bytes: [UInt8], version: Int) -> Int {
        (needsUTF8Designator(bytes) ? 12 : 0) + 4 + characterCountBits(version: version) + 8 * bytes.count
    }
}

// MARK: - Data and error-correction codewords

extension QRCode {
    /// The data bit stream as codewords: for non-ASCII text the ECI designator `0111` with assignment number 26
    /// (UTF-8), then mode indicator `0100` (byte), the byte count, the bytes, a terminator of up to four zero bits,
    /// zero bits to the next byte boundary, then the pad codewords 0xEC and 0x11 alternately until the data capacity
    /// is full.
    static func dataCodewords(_ bytes: [UInt8], version: Int, _ level: ErrorCorrection) -> [UInt8] {
        let capacityBits = dataCodewordCount(version: version, level) * 8
        var bits = BitBuffer()
        if needsUTF8Designator(bytes) {
            bits.append(0b0111, count: 4)
            bits.append(26, count: 8)
        }
        bits.append(0b0100, count: 4)
        bits.append(bytes.count, count: characterCountBits(version: version))
        for byte in bytes {
            bits.append(Int(byte), count: 8)
        }
        bits.append(0, count: min(4, capacityBits - bits.count))
        bits.append(0, count: (8 - bits.count % 8) % 8)

        var codewords = bits.bytes
        var pad: UInt8 = 0xEC
        while codewords.count * 8 < capacityBits {
            codewords.append(pad)
            pad = pad == 0xEC ? 0x11 : 0xEC
        }
        return codewords
    }

    /// Splits the data codewords into the blocks of the table, computes each block's Reed–Solomon codewords and
    /// interleaves: the first data codeword of every block, then the second, …, then likewise the error-correction
    /// codewords. Short blocks come first, so a long block's extra data codeword is taken after all the others.
    static func withErrorCorrection(_ data: [UInt8], version: Int, _ level: ErrorCorrection) -> [UInt8] {
        let (ecLength, blockCount) = ECTable.entry(version: version, level)
        let totalCodewords = rawDataModules(version: version) / 8
        let shortBlockCount = blockCount - totalCodewords % blockCount
        let shortDataLength = totalCodewords / blockCount - ecLength

        let generator = ReedSolomon.generator(degree: ecLength)
        var dataBlocks: [[UInt8]] = []
        var ecBlocks: [[UInt8]] = []
        var start = 0
        for index in 0..<blockCount {
            let length = shortDataLength + (index < shortBlockCount ? 0 : 1)
            let block = Array(data[start..<start + length])
            start += length
            dataBlocks.append(block)
            ecBlocks.append(ReedSolomon.remainder(of: block, dividedBy: generator))
        }

        var result: [UInt8] = []
        result.reserveCapacity(totalCodewords)
        for column in 0...shortDataLength {
            for block in dataBlocks where column < block.count {
                result.append(block[column])
            }
        }
        for column in 0..<ecLength {
            for block in ecBlocks {
                result.append(block[column])
            }
        }
        return result
    }
}

/// Bits appended most significant first, read back as bytes.
private struct BitBuffer {
    private var bits: [Bool] = []

    var count: Int { bits.count }

    /// Appends the low `count` bits of `value`, most significant first.
    mutating func append(_ value: Int, count: Int) {
        for shift in stride(from: count - 1, through: 0, by: -1) {
            bits.append((value >> shift) & 1 == 1)
        }
    }

    /// The bits packed into bytes; the count must be a multiple of 8.
    var bytes: [UInt8] {
        stride(from: 0, to: bits.count, by: 8).map { start in
            bits[start..<start + 8].reduce(0) { $0 << 1 | ($1 ? 1 : 0) }
        }
    }
}

extension QRCode {
    /// Reed–Solomon error correction over GF(256) with the field polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11D).
    enum ReedSolomon {
        /// Powers of the generator α = 2: `exponentials[i]` = αⁱ for i in 0..<255, and `logarithms` the inverse.
        private static let (exponentials, logarithms): ([UInt8], [Int]) = {
            var exponentials = [UInt8](repeating: 0, count: 255)
            var logarithms = [Int](repeating: 0, count: 256)
            var value = 1
            for power in 0..<255 {
                exponentials[power] = UInt8(value)
                logarithms[value] = power
                value <<= 1
                if value > 0xFF {
                    value ^= 0x11D
                }
            }
            return (exponentials, logarithms)
        }()

        /// The product of two field elements: αˣ · αʸ = α⁽ˣ⁺ʸ⁾ ᵐᵒᵈ ²⁵⁵; zero has no logarithm.
        static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
            guard a != 0, b != 0 else { return 0 }
            return exponentials[(logarithms[Int(a)] + logarithms[Int(b)]) % 255]
        }

        /// The generator polynomial (x − α⁰)(x − α¹)…(x − α^(degree−1)) with α = 2, as its coefficients from the
        /// highest power down, without the leading 1 (it is monic).
        static func generator(degree: Int) -> [UInt8] {
            var coefficients = [UInt8](repeating: 0, count: degree)
            coefficients[degree - 1] = 1
            var root: UInt8 = 1
            for _ in 0..<degree {
                // Multiply by (x − root); subtraction is XOR in GF(2⁸).
                for index in 0..<degree {
                    coefficients[index] = multiply(coefficients[index], root)
                    if index + 1 < degree {
                        coefficients[index] ^= coefficients[index + 1]
                    }
                }
                root = multiply(root, 2)
            }
            return coefficients
        }

        /// The error-correction codewords: the remainder of data(x) · x^degree divided by the generator, by polynomial
        /// long division (a linear-feedback shift register).
        static func remainder(of data: [UInt8], dividedBy generator: [UInt8]) -> [UInt8] {
            var remainder = [UInt8](repeating: 0, count: generator.count)
            for byte in data {
                let factor = byte ^ remainder.removeFirst()
                remainder.append(0)
                for index in remainder.indices {
                    remainder[index] ^= multiply(generator[index], factor)
                }
            }
            return remainder
        }
    }
}

// MARK: - The symbol

extension QRCode {
    /// Centre coordinates (on both axes) of the alignment patterns, ascending: 6, then evenly spaced down from
    /// size − 7 by an even step (ISO/IEC 18004 annex E). Version 1 has none.
    static func alignmentPatternCentres(version: Int) -> [Int] {
        guard version > 1 else { return [] }
        let count = version / 7 + 2
        let size = version * 4 + 17
        let step = (version * 8 + count * 3 + 5) / (count * 4 - 4) * 2
        return [6] + (0..<count - 1).map { size - 7 - $0 * step }.reversed()
    }

    /// The 15 format-information bits for a level and mask: 5 data bits, a BCH(15,5) remainder with generator
    /// 0x537, XOR-ed with 0x5412 so that the result is never all zero.
    static func formatInformation(_ level: ErrorCorrection, mask: Int) -> Int {
        let data = level.formatBits << 3 | mask
        return (data << 10 | bchRemainder(data << 10, generator: 0x537)) ^ 0x5412
    }

    /// The 18 version-information bits: the 6-bit version and a BCH(18,6) remainder with generator 0x1F25.
    static func versionInformation(_ version: Int) -> Int {
        version << 12 | bchRemainder(version << 12, generator: 0x1F25)
    }

    /// The remainder of the polynomial `value` divided by `generator`, both over GF(2) as bit patterns.
    private static func bchRemainder(_ value: Int, generator: Int) -> Int {
        /// The highest power present; −1 for the zero polynomial.
        func degree(_ polynomial: Int) -> Int { Int.bitWidth - polynomial.leadingZeroBitCount - 1 }
        var remainder = value
        while degree(remainder) >= degree(generator) {
            remainder ^= generator << (degree(remainder) - degree(generator))
        }
        return remainder
    }

    /// Whether data mask `mask` (0…7) inverts the module in column `x`, row `y` (ISO/IEC 18004 table 10).
    static func maskInverts(_ mask: Int, x: Int, y: Int) -> Bool {
        switch mask {
        case 0: (x + y) % 2 == 0
        case 1: y % 2 == 0
        case 2: x % 3 == 0
        case 3: (x + y) % 3 == 0
        case 4: (x / 3 + y / 2) % 2 == 0
        case 5: x * y % 2 + x * y % 3 == 0
        case 6: (x * y % 2 + x * y % 3) % 2 == 0
        default: ((x + y) % 2 + x * y % 3) % 2 == 0
        }
    }

    /// A symbol under construction: the modules and which of them belong to function patterns (not data, not masked).
    struct Symbol {
        let size: Int
        private(set) var modules: [Bool]
        private var isFunction: [Bool]

        /// A symbol with every function pattern drawn and the format-information areas reserved.
        init(version: Int) {
            size = version * 4 + 17
            modules = Array(repeating: false, count: size * size)
            isFunction = Array(repeating: false, count: size * size)
            drawFunctionPatterns(version: version)
        }

        private mutating func setFunction(x: Int, y: Int, dark: Bool) {
            modules[y * size + x] = dark
            isFunction[y * size + x] = true
        }

        /// Timing patterns (alternating modules along row 6 and column 6), the three finder patterns with their
        /// light separators, the alignment patterns, the format areas with the dark module, and from version 7 on
        /// the version information.
        private mutating func drawFunctionPatterns(version: Int) {
            for i in 0..<size {
                setFunction(x: 6, y: i, dark: i % 2 == 0)
                setFunction(x: i, y: 6, dark: i % 2 == 0)
            }

            // A finder is a 7 × 7 dark ring, a light ring and a 3 × 3 dark core; the light ring around it (clipped
            // by the symbol's edge) is the separator. By Chebyshev distance from the centre: light at 2 and 4.
            for (cx, cy) in [(3, 3), (size - 4, 3), (3, size - 4)] {
                for dy in -4...4 {
                    for dx in -4...4 where (0..<size).contains(cx + dx) && (0..<size).contains(cy + dy) {
                        let distance = max(abs(dx), abs(dy))
                        setFunction(x: cx + dx, y: cy + dy, dark: distance != 2 && distance != 4)
                    }
                }
            }

            // Alignment patterns: 5 × 5, dark ring, light ring, dark centre; none where a finder already is.
            let centres = QRCode.alignmentPatternCentres(version: version)
            let last = centres.count - 1
            for (row, cy) in centres.enumerated() {
                for (column, cx) in centres.enumerated() {
                    if (row == 0 && column == 0) || (row == 0 && column == last) || (row == last && column == 0) {
                        continue
                    }
                    for dy in -2...2 {
                        for dx in -2...2 {
                            setFunction(x: cx + dx, y: cy + dy, dark: max(abs(dx), abs(dy)) != 1)
                        }
                    }
                }
            }

            // Reserve the format areas; the real bits are written once the mask is known.
            drawFormatBits(0)

            // Version information: 18 bits, least significant first, as a 6 × 3 block above the bottom-left finder
            // and its transpose left of the top-right finder.
            if version >= 7 {
                let bits = QRCode.versionInformation(version)
                for i in 0..<18 {
                    let dark = (bits >> i) & 1 == 1
                    let a = size - 11 + i % 3
                    let b = i / 3
                    setFunction(x: b, y: a, dark: dark)
                    setFunction(x: a, y: b, dark: dark)
                }
            }
        }

        /// Writes the format information for the chosen level and mask.
        mutating func drawFormatInformation(_ level: ErrorCorrection, mask: Int) {
            drawFormatBits(QRCode.formatInformation(level, mask: mask))
        }

        /// Places the 15 format bits twice, bit 0 being the least significant. First copy around the top-left
        /// finder: bits 0–5 down column 8 (rows 0–5), 6–7 at rows 7–8 (skipping the timing row), 8 at column 7 of
        /// row 8, 9–14 along row 8 from column 5 to 0. Second copy: bits 0–7 along row 8 from the right edge
        /// leftwards, bits 8–14 down column 8 in the bottom seven rows. Plus the dark module at (8, size − 8).
        private mutating func drawFormatBits(_ bits: Int) {
            func bit(_ i: Int) -> Bool { (bits >> i) & 1 == 1 }
            for i in 0...5 {
                setFunction(x: 8, y: i, dark: bit(i))
            }
            setFunction(x: 8, y: 7, dark: bit(6))
            setFunction(x: 8, y: 8, dark: bit(7))
            setFunction(x: 7, y: 8, dark: bit(8))
            for i in 9..<15 {
                setFunction(x: 14 - i, y: 8, dark: bit(i))
            }

            for i in 0..<8 {
                setFunction(x: size - 1 - i, y: 8, dark: bit(i))
            }
            for i in 8..<15 {
                setFunction(x: 8, y: size - 15 + i, dark: bit(i))
            }
            setFunction(x: 8, y: size - 8, dark: true)
        }

        /// Places the codewords, most significant bit first, in two-module-wide columns from the right edge: up the
        /// first pair, down the next, and so on, the right module of a pair before the left one, skipping function
        /// modules and the vertical timing pattern's column. Modules left over are remainder bits, light (zero).
        mutating func placeCodewords(_ codewords: [UInt8]) {
            let bitCount = codewords.count * 8
            var index = 0
            var right = size - 1
            while right >= 1 {
                if right == 6 {
                    right = 5
                }
                let upward = (right + 1) & 2 == 0
                for step in 0..<size {
                    let y = upward ? size - 1 - step : step
                    for x in [right, right - 1] where !isFunction[y * size + x] && index < bitCount {
                        modules[y * size + x] = (codewords[index / 8] >> (7 - index % 8)) & 1 == 1
                        index += 1
                    }
                }
                right -= 2
            }
        }

        /// Inverts the data and remainder modules where the mask condition holds.
        mutating func applyMask(_ mask: Int) {
            for y in 0..<size {
                for x in 0..<size where !isFunction[y * size + x] && QRCode.maskInverts(mask, x: x, y: y) {
                    modules[y * size + x].toggle()
                }
            }
        }
    }
}

// MARK: - Mask evaluation

extension QRCode {
    /// The penalty score of ISO/IEC 18004 section 7.8.3; the mask with the lowest score is used.
    ///
    /// 1. Each run of five or more same-coloured modules in a row or column: 3 + (length − 5).
    /// 2. Each 2 × 2 block of one colour (blocks may overlap): 3.
    /// 3. Each 1:1:3:1:1 dark–light–dark–light–dark pattern in a row or column with four light modules before or
    ///    after it: 40. Outside the symbol counts as light, since the quiet zone is.
    /// 4. The dark share's deviation from 50 %: 10 for every full 5 %.
    static func penalty(modules: [Bool], size: Int) -> Int {
        let rows = (0..<size).map { y in Array(modules[y * size..<(y + 1) * size]) }
        let columns = (0..<size).map { x in (0..<size).map { y in modules[y * size + x] } }
        var score = 0

        for line in rows + columns {
            var runLength = 1
            for i in 1...line.count {
                if i < line.count && line[i] == line[i - 1] {
                    runLength += 1
                } else {
                    if runLength >= 5 {
                        score += 3 + (runLength - 5)
                    }
                    runLength = 1
                }
            }
            score += 40 * finderLikePatterns(in: line)
        }

        for y in 0..<size - 1 {
            for x in 0..<size - 1 {
                let colour = modules[y * size + x]
                let right = modules[y * size + x + 1]
                let below = modules[(y + 1) * size + x]
                let diagonal = modules[(y + 1) * size + x + 1]
                if right == colour && below == colour && diagonal == colour {
                    score += 3
                }
            }
        }

        let dark = modules.lazy.filter { $0 }.count
        let total = modules.count
        score += 10 * (abs(dark * 20 - total * 10) / total)
        return score
    }

    /// Occurrences of `1011101` preceded or followed by `0000` in a row or column, counted once for each side; the
    /// quiet zone around the symbol is light.
    static func finderLikePatterns(in line: [Bool]) -> Int {
        /// Dark, light, three dark, light, dark from `start` on.
        func isCore(at start: Int) -> Bool {
            line[start] && !line[start + 1] && line[start + 2] && line[start + 3] && line[start + 4]
                && !line[start + 5] && line[start + 6]
        }
        func isLight(_ range: Range<Int>) -> Bool {
            range.allSatisfy { !line.indices.contains($0) || !line[$0] }
        }
        var count = 0
        for start in 0...(line.count - 7) where isCore(at: start) {
            if isLight(start - 4..<start) {
                count += 1
            }
            if isLight(start + 7..<start + 11) {
                count += 1
            }
        }
        return count
    }
}

// MARK: - SVG

extension QRCode {
    /// An SVG document: a white background, a 4-module quiet zone, and ONE <path> with the dark modules
    /// (merge horizontal runs into single rectangles, e.g. "M4,4h3v1h-3z"), viewBox in module units,
    /// `shape-rendering="crispEdges"`, width/height attributes = (size+8)*moduleSize, with an `aria-label`/`<title>`
    /// holding `title` (XML-escaped).
    public func svg(moduleSize: Int = 8, title: String = "QR code") -> String {
        let side = size + 8
        let pixels = side * moduleSize
        var path = ""
        for y in 0..<size {
            var x = 0
            while x < size {
                guard isDark(x: x, y: y) else {
                    x += 1
                    continue
                }
                let start = x
                while x < size && isDark(x: x, y: y) {
                    x += 1
                }
                path += "M\(start + 4),\(y + 4)h\(x - start)v1h-\(x - start)z"
            }
        }
        let label = XMLText.escape(title)
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(pixels)" height="\(pixels)" \
            viewBox="0 0 \(side) \(side)" shape-rendering="crispEdges" role="img" aria-label="\(label)">
            <title>\(label)</title>
            <rect width="\(side)" height="\(side)" fill="#fff"/>
            <path fill="#000" d="\(path)"/>
            </svg>

            """
    }

}
