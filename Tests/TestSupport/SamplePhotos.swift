import Foundation

/// Tiny but well-formed image files with metadata in them, for upload tests.
public enum SamplePhotos {
    /// SOI, APP0 (JFIF), APP1 ("Exif" with a fake GPS tag), SOS with two bytes of data, EOI.
    public static let jpegWithExif: [UInt8] =
        [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x07] + Array("JFIF\0".utf8)
        + [0xFF, 0xE1, 0x00, 0x10] + Array("Exif\0\0GPS52.5N".utf8)
        + [0xFF, 0xDA, 0x00, 0x04, 0x01, 0x00, 0x12, 0x34, 0xFF, 0xD9]

    /// Signature, IHDR, a tEXt chunk ("Location"), IEND. CRCs are not checked by the stripper and are zero here.
    public static let pngWithText: [UInt8] = {
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let n = UInt32(data.count)
            return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + Array(type.utf8)
                + data + [0, 0, 0, 0]
        }
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            + chunk("IHDR", [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0])
            + chunk("tEXt", Array("Location\0Berlin Mitte".utf8))
            + chunk("IEND", [])
    }()
}
