/* crc32c.h: CRC-32C (Castagnoli), the checksum of the log and bitmaps.
 * Uses the SSE4.2 crc32 instruction when the CPU has it, else a table. */
#ifndef REPLICATOR_CRC32C_H
#define REPLICATOR_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: pass 0 to start.  crc32c(crc32c(0,a),b) == crc32c(0,ab). */
uint32_t crc32c (uint32_t crc, const void *buf, size_t len);

#endif
