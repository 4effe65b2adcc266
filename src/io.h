/* io.h: whole-buffer pread/pwrite that retry short transfers and EINTR, the
 * parent-directory sync, clocks and polls. */
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
/* Every byte of buf[0..len) is zero. */
bool io_all_zero (const void *buf, size_t len);
/* fsync the directory holding path, so that a name just created or renamed
 * there survives a power loss (safety rule 14).  0 or -1 (errno). */
int io_sync_parent_dir (const char *path);

/* fd ready for ev before deadline (CLOCK_MONOTONIC milliseconds: mono_ns of
 * units.h / 1000000) and stop_fd (if >= 0) not
 * readable: true. */
bool io_wait_until (int fd, short ev, uint64_t deadline, int stop_fd);
/* The next connection on listening socket lfd (CLOEXEC), or -1 once stop_fd
 * is readable or poll fails for good. */
int io_accept_next (int lfd, int stop_fd);

#endif
