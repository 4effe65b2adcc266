/* replog.h: the replication log (see the format comment in replog.c).
 *
 * Writers (nbdkit threads) reserve an entry, copy the payload into the
 * mapping, and commit it.  A syncer thread makes committed entries durable
 * in batches (group commit) and writes the header when a site's applied
 * sequence advances.  Site workers read durable entries, apply them to
 * their legs and post the new applied sequence; space is reused once a
 * durable header no longer needs it.
 */
#ifndef REPLICATOR_REPLOG_H
#define REPLICATOR_REPLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "replog-format.h"

struct replog;

struct replog_dev_id {
  const char *name;
  uint64_t size;
  uint32_t block_size;
};

/* The group's identity in the header (leg labels, safety rule 15): group
 * UUID, current generation and the ones before it, each device's UUID by
 * slot.  All zero in a log written before labels existed. */
struct replog_identity {
  uint8_t group[16];
  uint64_t gen;
  unsigned nhist;
  struct lbl_gen hist[RL_HIST];
  uint8_t dev_uuid[RL_MAX_DEVICES][16];
  /* Open args only: non-NULL when this identity may not be given to a
   * header without one (the caller says why: the log is then refused). */
  const char *refuse;
};

struct replog_open_args {
  const char *path;
  uint64_t offset;              /* byte offset of header copy A */
  uint64_t size;                /* log size for create/auto */
  int mode;                     /* enum cfg_log_mode */
  uint64_t commit_interval_ms;  /* background group commit */
  unsigned ndevices;
  const struct replog_dev_id *devices;
  uint32_t sites;               /* bit i: site i is configured */
  uint32_t log_sites;           /* bit i: a NEW site i starts in log mode
                                   (its legs are trusted); else dirty mode */
  /* The identity a new log gets, and a log without one (before labels);
   * a device slot that is new or changes name gets its UUID from here. */
  const struct replog_identity *identity;
};

/* What open found; printed by the caller. */
struct replog_recovery {
  bool created;                 /* a new log was initialised */
  int header_copy;              /* 0 = A, 1 = B: the copy that was used */
  bool other_copy_bad;          /* the other header copy failed its checks */
  uint64_t generation;
  uint64_t first_seq, last_seq; /* recovered entries [first, last]; none if first > last */
  uint64_t entries, bytes;      /* recovered count and payload bytes */
  const char *stop_reason;      /* why the scan stopped */
  bool on_tmpfs;
  uint32_t new_sites;           /* sites added to the header by this open */
  bool identity_new;            /* the header had no identity: given one now */
  uint32_t new_dev_uuids;       /* bit i: device slot i got a new UUID */
  struct replog_identity identity;  /* what the header holds after open */
};

/* Open (and create or recover) the log.  0, or -1 with one error reported. */
int replog_open (const struct replog_open_args *a, struct replog **rlp,
                 struct replog_recovery *rec);
/* Start the syncer thread (after fork). */
int replog_start (struct replog *rl);
/* Stop the syncer after a final sync; mark clean if every log site has
 * applied everything.  Safe to call twice. */
void replog_stop (struct replog *rl);
void replog_close (struct replog *rl);

/* ---- writers ---- */

/* Reserve the next entry.  Waits (no busy loop) while the log is full.
 * For RL_OP_WRITE, *payload points to where the payload shows in the
 * mapping (read-only: fill it with replog_fill).  -1 with errno = EIO if the log failed. */
int replog_reserve (struct replog *rl, unsigned dev, int op, int flags,
                    uint64_t offset, uint32_t length, uint64_t *seq, void **payload);
/* Write a reserved write entry's payload (length bytes from buf) into the
 * log and compute its checksum.  -1 with errno on an I/O error. */
int replog_fill (struct replog *rl, uint64_t seq, const void *buf);
/* Seal a reserved entry (checksum) and make it visible to the syncer.
 * A write entry must have been filled with replog_fill. */
void replog_commit (struct replog *rl, uint64_t seq);
/* Append an epoch barrier if anything was written since the last one, and
 * return in *seq the sequence a flush must wait for (the last reserved). */
int replog_barrier (struct replog *rl, int flags, uint64_t *seq);
/* Wait until every entry <= seq is durable in the log.  -1/EIO if failed. */
int replog_wait_durable (struct replog *rl, uint64_t seq);
/* The same, waiting at most until until_ns (mono_ns): 1 if the entries are
 * not durable by then (the sync round goes on without the caller), 0 once
 * durable, -1/EIO if failed.  The syncer runs the round: the caller never
 * runs it itself, so that it can leave on time (a sync_deadline). */
int replog_wait_durable_until (struct replog *rl, uint64_t seq, uint64_t until_ns);

/* ---- readers and workers ---- */

const struct rl_desc *replog_desc (struct replog *rl, uint64_t seq);
const void *replog_payload (struct replog *rl, const struct rl_desc *d);
/* Wait up to timeout_ms for durable entries after `after`; returns the
 * durable sequence (== after on timeout or stop). */
uint64_t replog_wait_work (struct replog *rl, uint64_t after, unsigned timeout_ms);
/* A worker says: every entry <= seq is durable on site's legs. */
void replog_post_applied (struct replog *rl, unsigned site, uint64_t seq);
/* Wait until the header durably records applied >= seq for site.
 * -1/EIO if the log failed. */
int replog_wait_applied (struct replog *rl, unsigned site, uint64_t seq);
/* Applied sequence of a site as the durable header has it. */
uint64_t replog_applied (struct replog *rl, unsigned site);
/* ms != 0: some entries have no copy but the log's (a failed local leg
 * that no remote site serves): writers wait at most ms for space, then
 * fail with EIO (safety rule 4).  0: wait until space is freed. */
void replog_set_only_copy_wait (struct replog *rl, uint64_t ms);
/* True while writers wait for space (workers should checkpoint). */
bool replog_space_wanted (struct replog *rl);

/* ---- site modes ---- */

/* Called under the log's lock for each entry leaving the log (its space
 * about to be reused) that dirty-mode sites (bit mask) have not applied:
 * record its regions in their dirty logs.  Must not block. */
typedef void (*replog_release_fn) (void *opaque, uint32_t sites, const struct rl_desc *d);
void replog_set_release_fn (struct replog *rl, replog_release_fn fn, void *opaque);
/* Called without the log's lock before every header write and before the
 * tail moves past entries whose regions release_fn recorded: make the
 * dirty logs' set bits durable.  Returns the sites (bit mask) whose dirty
 * logs could not be written: the header then carries RL_SITE_DLOG_LOST
 * for them before any of their entries leave the log. */
void replog_set_dirtylog_sync (struct replog *rl, uint32_t (*fn) (void *), void *opaque);
/* An eventfd written when workers have something to do (new durable
 * entries, writers waiting for space, stopping). */
void replog_add_waker (struct replog *rl, int fd);
void replog_remove_waker (struct replog *rl, int fd);
/* RL_MODE_LOG or RL_MODE_DIRTY, as the durable header has it. */
int replog_site_mode (struct replog *rl, unsigned site);
/* Move a site to dirty-log mode: returns once a durable header says so
 * (from then on its applied no longer holds the tail).  -1/EIO if the log
 * failed.  Before replog_start, only queued for the first header write. */
int replog_set_site_dirty (struct replog *rl, unsigned site);
/* Set and clear site flags (RL_SITE_*); returns once a durable header has
 * the change. */
int replog_change_site_flags (struct replog *rl, unsigned site, uint8_t set, uint8_t clear);
uint8_t replog_site_flags (struct replog *rl, unsigned site);
/* Device flags (RL_DEV_*): as the durable header has them; change them
 * and return once a durable header has the change. */
uint8_t replog_dev_flags (struct replog *rl, unsigned dev);
int replog_change_dev_flags (struct replog *rl, unsigned dev, uint8_t set, uint8_t clear);
/* Switch a dirty-mode site back to log mode for a resync: under the log's
 * lock, *start = the next seq to be reserved, and mark() is called for
 * every entry still in the log that the site lacks (seq < *start); then
 * returns once a durable header has the site in log mode with applied =
 * *start - 1 and RL_SITE_RESYNC.  Entries from *start on are kept for the
 * site from the moment of the switch.  A site in log mode already: *start
 * = applied + 1, nothing marked.  -1/EIO if the log failed. */
int replog_site_resume (struct replog *rl, unsigned site, replog_release_fn mark, void *opaque,
                        uint64_t *start);
/* Writers wait for space and this site is (one of) the oldest. */
bool replog_site_holds_full_log (struct replog *rl, unsigned site);

/* ---- status ---- */
struct replog_stats {
  uint64_t next_seq, committed_seq, durable_seq, tail_seq;
  uint64_t ndesc, data_blocks, data_used_blocks;
  uint64_t epoch, syncs, header_writes, space_waits;
  uint64_t size;
  bool failed;
};
void replog_get_stats (struct replog *rl, struct replog_stats *st);
/* Header identity (tests, replctl). */
void replog_get_header (struct replog *rl, struct rl_header *h);

/* ---- format helpers (also used by the unit tests) ---- */

/* Validate one header copy; NULL if valid, else the reason. */
const char *replog_header_check (const struct rl_header *h, uint64_t file_room);
/* Entry checksum. */
uint32_t replog_desc_crc (uint64_t salt, const struct rl_desc *d, const void *payload);
/* Geometry of a log of `size` bytes: 0, or -1 if too small. */
int replog_geometry (uint64_t size, uint64_t *ndesc, uint64_t *data_offset, uint64_t *data_blocks);

#endif
