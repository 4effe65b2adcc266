/* pftrace.h: a record of what the replicator writes to its files and what each
 * sync made durable, for the power-loss emulation of the crash torture
 * (tests/torture/powerloss.py rebuilds files as of their last sync plus any
 * subset of the later writes).  Off, at the cost of one load and branch per
 * call, unless NBD_REPLICATOR_PFTRACE names a trace file at start.
 *
 * Trace records (little-endian), appended in the order the events happened
 * (a write after it reached the page cache or the device, a sync's begin
 * before it is issued, its end after it succeeded):
 *   u8 type, u8 0, u16 path length, u32 0, u64 offset, u64 length,
 *   path bytes (the file's /proc/self/fd link), then for 'W' length bytes.
 * Types: 'W' data written, 'Z' range reads back zeroes (fallocate or written
 * zeroes), 'S' sync begins, 'D' sync done, 'T' truncated to offset,
 * 'R' renamed (path = old name, then u64 length + the new name as data),
 * 'C' created (a new name in its directory).  A name ('C', 'R') survives a
 * power loss only once an 'S'..'D' sync of its directory (path = the
 * directory) began after it (safety rule 14). */
#ifndef REPLICATOR_PFTRACE_H
#define REPLICATOR_PFTRACE_H

#include <stddef.h>
#include <stdint.h>

extern int pft_fd;                 /* -1: tracing is off */
void pft_init (void);              /* reads NBD_REPLICATOR_PFTRACE once */

void pft_record (char type, int fd, uint64_t off, uint64_t len, const void *data);
void pft_rename (const char *from, const char *to);

static inline void
pft_write (int fd, const void *buf, uint64_t len, uint64_t off)
{
  if (__builtin_expect (pft_fd >= 0, 0))
    pft_record ('W', fd, off, len, buf);
}

static inline void
pft_zero (int fd, uint64_t off, uint64_t len)
{
  if (__builtin_expect (pft_fd >= 0, 0))
    pft_record ('Z', fd, off, len, NULL);
}

static inline void
pft_sync (int fd, char begin_or_done)
{
  if (__builtin_expect (pft_fd >= 0, 0))
    pft_record (begin_or_done, fd, 0, 0, NULL);
}

static inline void
pft_create (int fd)
{
  if (__builtin_expect (pft_fd >= 0, 0))
    pft_record ('C', fd, 0, 0, NULL);
}

static inline void
pft_truncate (int fd, uint64_t size)
{
  if (__builtin_expect (pft_fd >= 0, 0))
    pft_record ('T', fd, size, 0, NULL);
}

#endif
