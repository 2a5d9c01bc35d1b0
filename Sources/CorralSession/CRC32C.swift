import CCorralSession

/// CRC-32C of the bytes given, continuing from `previous` (0 to start).
@inline(__always)
func crc32c(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
    guard let base = bytes.baseAddress, !bytes.isEmpty else { return previous }
    return corral_crc32c(previous, base, bytes.count)
}

func crc32c(_ bytes: [UInt8], continuing previous: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32c($0, continuing: previous) }
}

/// The table-driven path, which CPUs without CRC instructions use.
func crc32cPortable(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { corral_crc32c_portable(0, $0.baseAddress, $0.count) }
}

var crc32cUsesHardware: Bool { corral_crc32c_is_hardware() != 0 }
