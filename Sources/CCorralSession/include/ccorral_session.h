#ifndef CCORRAL_SESSION_H
#define CCORRAL_SESSION_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli), as used by iSCSI and ext4: reflected polynomial 0x82F63B78,
/// initial value and final xor 0xFFFFFFFF. `crc` is the value returned by a previous
/// call (0 to start), so a checksum can be computed over several pieces.
/// Uses the SSE4.2 or ARMv8 CRC instructions when the CPU has them, else slicing-by-8.
uint32_t corral_crc32c(uint32_t crc, const void *data, size_t length);

/// 1 when `corral_crc32c` runs on the CPU's CRC instructions.
int corral_crc32c_is_hardware(void);

/// The portable path, exposed so tests can check both paths against each other.
uint32_t corral_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// rename(2) that fails with EEXIST instead of replacing an existing target
/// (renameat2 with RENAME_NOREPLACE). Returns 0 or -1 with errno set; EINVAL or ENOSYS
/// when the file system cannot do it.
int corral_rename_noreplace(const char *from, const char *to);

#endif
