/* replog-int.h: the replication log's internals, shared by its two files
 * and by nothing else.
 *
 *   replog.c       the format (documented there), create, open, recovery,
 *                  and the few format rules the run-time path applies
 *                  (header writes, the tail a header allows), the teardown;
 *   replog-ring.c  the ring's run-time path: writers, the syncer (group
 *                  commit and header writes), workers, site modes, the
 *                  release of space, start/stop/close.
 *
 * Calls go one way: replog-ring.c calls the functions declared at the
 * bottom (defined in replog.c); replog.c calls nothing of replog-ring.c.
 */
#ifndef REPLICATOR_REPLOG_INT_H
#define REPLICATOR_REPLOG_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "replog.h"
#include "units.h"

/* Header changes asked for and not yet in a durable header: the next
 * sync round writes them (header_with_pending in replog-ring.c). */
struct rl_pending {
  uint64_t applied[RL_MAX_SITES];        /* posted by workers */
  uint32_t dirty;                        /* sites to switch to dirty-log mode */
  uint32_t resume;                       /* sites to switch back to log mode (resync) */
  uint64_t resume_applied[RL_MAX_SITES]; /* ... their applied seq then */
  uint8_t site_set[RL_MAX_SITES];        /* site flags to set */
  uint8_t site_clear[RL_MAX_SITES];      /* ... and to clear */
  uint8_t dev_set[RL_MAX_DEVICES];       /* device flags to set */
  uint8_t dev_clear[RL_MAX_DEVICES];     /* ... and to clear */
};

/* What the layers above registered (replog_set_release_fn,
 * replog_set_dirtylog_sync, replog_add_waker). */
struct rl_hooks {
  replog_release_fn release_fn;  /* entries leaving the log while a site is dirty */
  void *release_opaque;
  uint32_t (*dl_sync_fn) (void *); /* make dirty-log marks durable (persistent dirty logs);
                                    returns the sites whose dirty logs could not be */
  void *dl_sync_opaque;
  int wakers[RL_MAX_SITES];      /* eventfds poked when workers have something to do */
  unsigned nwakers;
};

/* Threads waiting, by what for: a waiter makes the syncer's round urgent. */
struct rl_waiters {
  unsigned flush;                /* replog_wait_durable */
  unsigned header;               /* wait_header: a durable header with a change */
  unsigned space;                /* replog_reserve: the log is full */
};

/* Counters for replog_get_stats. */
struct rl_counters {
  uint64_t syncs, header_writes, space_waits;
};

struct replog {
  /* Fixed at open, read without the lock. */
  char *path;
  int fd;
  uint64_t base;                 /* byte offset of header copy A */
  uint8_t *map;                  /* maps [base + desc_offset, base + log_size) */
  size_t map_len;
  uint8_t *desc_ring;            /* == map */
  uint8_t *data_ring;
  uint64_t ndesc, data_blocks, salt; /* geometry, copied from the header */
  uint64_t data_file_off;        /* base + data_offset */
  uint64_t commit_interval_ns;

  /* Owned by the writer that reserved the slot, from replog_reserve to
   * replog_commit (no lock): its descriptor in the mapping, its payload
   * blocks, and its entry in slot_crc (per slot: the checksum computed by
   * replog_fill). */
  uint32_t *slot_crc;

  /* Written by replog_start and replog_stop (the thread that owns the
   * log's life, not under the lock); read under the lock. */
  bool syncer_running;
  pthread_t syncer;

  /* lock guards: hdr, hdr_old, next_seq, committed_seq, durable_seq,
   * tail_seq, data_head, epoch, dirty_since_barrier, marked_upto,
   * slot_committed, slot_pos, pend, syncing, only_copy_wait_ns, hooks,
   * waiters, failed, stopping, counters.  The condition variables below
   * wait on it. */
  pthread_mutex_t lock;
  pthread_cond_t space_cv;       /* tail advanced, or failed/stopping */
  pthread_cond_t durable_cv;     /* durable_seq or recorded applied advanced */
  pthread_cond_t syncer_cv;      /* work for the syncer */
  pthread_cond_t work_cv;        /* durable_seq advanced (workers) */

  struct rl_header hdr;          /* the newest durable header (its geometry never
                                    changes after open: desc_traced reads
                                    hdr.desc_offset without the lock) */
  struct rl_header hdr_old;      /* the other copy: recovery falls back to it if
                                    the newest one is damaged, so space is reused
                                    only once both copies let it go */
  uint64_t next_seq;             /* next seq to reserve */
  uint64_t committed_seq;        /* every entry <= this is committed */
  uint64_t durable_seq;          /* every entry <= this is durable */
  uint64_t tail_seq;             /* oldest entry still needed */
  uint64_t data_head;            /* next free logical data block */
  uint64_t epoch;                /* current global epoch */
  bool dirty_since_barrier;      /* an entry was logged since the last barrier */
  uint64_t marked_upto;          /* release_fn called for entries below this */
  uint8_t *slot_committed;       /* per slot: 1 once committed */
  uint64_t *slot_pos;            /* per slot: data_pos, for the tail */
  struct rl_pending pend;
  bool syncing;                  /* a sync round is under way */
  uint64_t only_copy_wait_ns;    /* != 0: the log holds the only copy of some
                                    entries: writers wait this long for space */
  struct rl_hooks hooks;
  struct rl_waiters waiters;
  bool failed;                   /* first failed sync: EIO for ever */
  bool stopping;
  struct rl_counters counters;
};

static inline uint64_t
slot_of (const struct replog *rl, uint64_t seq)
{
  return seq % rl->ndesc;
}

static inline struct rl_desc *
desc_at (struct replog *rl, uint64_t seq)
{
  return (struct rl_desc *) (rl->desc_ring + slot_of (rl, seq) * RL_DESC_SIZE);
}

/* ---- defined in replog.c, called by replog-ring.c ---- */

/* Write header h as generation + 1 to its copy (generation & 1), no sync. */
int rl_header_write (struct replog *rl, struct rl_header *h);
/* fdatasync of the log's file, recorded in the power-loss trace (pftrace.h)
 * so that the emulation knows what it made durable: 0 or -1 (errno). */
int rl_sync (int fd);
/* The tail header h allows: the oldest entry a log-mode site (or one
 * going back to log mode, pend.resume) still needs; *dirty gets the
 * dirty-mode sites.  Under the lock (or before the log is shared). */
uint64_t rl_tail_of (struct replog *rl, const struct rl_header *h, uint32_t *dirty);
/* Unmap, close and free (the syncer is not running). */
void rl_free (struct replog *rl);

#endif
