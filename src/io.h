/* io.h: whole-buffer pread/pwrite that retry short transfers and EINTR. */
#ifndef REPLICATOR_IO_H
#define REPLICATOR_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Read len bytes at off.  At end of file: zero-fill the rest when
 * eof_zeroes, else fail with EIO.  0 or -1 (errno). */
int io_pread_full (int fd, void *buf, size_t len, uint64_t off, bool eof_zeroes);
/* Write len bytes at off.  0 or -1 (errno). */
int io_pwrite_full (int fd, const void *buf, size_t len, uint64_t off);

#endif
