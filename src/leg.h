/* leg.h: one leg's synchronous I/O (leg.c), under the device view and the
 * workers: opening a path leg, reads, holes, its dirty log's file. */
#ifndef REPLICATOR_LEG_H
#define REPLICATOR_LEG_H

#include <stddef.h>
#include <stdint.h>

struct leg;

/* What status shows for a leg (status.c decides it from the leg's own
 * state and its site's). */
enum leg_state {
  LEG_REPLICATING,
  LEG_BEHIND,
  LEG_DISCONNECTED,
  LEG_DIRTY_LOG_MODE,            /* shown "dirty": its site is in dirty-log mode */
  LEG_RESYNCING,
  LEG_FAILED,
};
const char *leg_state_name (enum leg_state s);

/* Open a path leg (file or block device) and learn its size and block
 * size: 0, or -1 (reported). */
int leg_open_local (struct leg *l, const char *path);
/* Read [off, off + len) of a path leg, honouring O_DIRECT alignment:
 * 0, or -1 (errno). */
int leg_read (struct leg *l, void *buf, uint32_t len, uint64_t off);
/* Read a leg (any kind) synchronously: 0, or -errno with a line in err. */
int leg_pread_any (struct leg *l, void *buf, uint32_t len, uint64_t off, char *err, size_t errlen);
/* Where [off, off + len) of the leg stops reading as zeroes. */
uint64_t leg_hole_end (struct leg *l, uint64_t off, uint64_t len);
/* Flush the leg's dirty-log file (dlog_flush; a failure retried with
 * success is logged): 0, or -1 (errno) when the file could not be
 * written, also after reopening it. */
int leg_dlog_flush (struct leg *l);

#endif
