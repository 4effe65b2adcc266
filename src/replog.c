/* replog.c: the replication log.
 *
 * REPLICATION LOG FORMAT (version 1)
 * ==================================
 *
 * The log lives in a file or a block device, starting at a byte offset
 * (replog.offset, a multiple of 4096).  All integers are little-endian.
 * Offsets below are from the start of the log.
 *
 *      0  header copy A  (4096 bytes, struct rl_header)
 *   4096  header copy B  (4096 bytes)
 *   8192  descriptor ring: ndesc slots of 64 bytes (struct rl_desc)
 *   data_offset = 8192 + ndesc*64: data ring of data_blocks blocks of 4096
 *   log_size: end
 *
 * ndesc is a multiple of 64 (so the descriptor ring is whole pages) and
 * data_blocks >= ndesc: the log can hold one 4 KiB write per slot.  A
 * 4 KiB client write costs one 4 KiB data block plus 64 bytes of
 * descriptor, and its payload is 4 KiB-aligned in the file and in the
 * mapping, which is what an O_DIRECT leg needs to be written from.
 *
 * Header (struct rl_header, see replog-format.h for the byte table):
 *   magic "NBDRPLOG", version, header_size, generation, salt, geometry
 *   (log_size, block_size, desc_offset, ndesc, data_offset, data_blocks),
 *   per site (16): applied seq, present, mode (log / dirty-log), flags
 *   (RL_SITE_IN_DOUBT: writes of an aborted connection may still land there,
 *   so the site is not consistent until resynchronised; RL_SITE_RESYNC: the
 *   site went back to log mode at applied + 1 while regions recorded in its
 *   dirty logs were still to be copied, so it is not a consistent prefix
 *   until that resync finishes; the flag is cleared only after the copies
 *   were flushed there; RL_SITE_DLOG_LOST: a dirty-log file of the site
 *   could not be written, so its bitmaps on disk may lack regions the log
 *   released: a restart marks every region of the site's legs; decided at
 *   each header write, never set for a site that is a consistent prefix
 *   in log mode); per device
 *   (32): name, size, block size; crc32c of bytes 0..4091 at 4092.
 *
 * Header validity: a copy is valid iff (1) magic and version match,
 * (2) its crc32c matches, (3) its geometry is self-consistent and fits
 * the file.  Of two valid copies the one with the higher generation wins;
 * if only one is valid it is used (and the fall-back is reported); if none
 * is, open fails (mode=auto creates a log only when both copies are all
 * zero bytes: a damaged header is never a reason to create).
 * A header write goes to copy (generation & 1) with generation + 1, so the
 * copy that is being written is never the newest valid one, and is synced
 * before the next write: one copy changes at a time.
 *
 * Entries.  Entry seq (1, 2, 3, ...) lives in descriptor slot seq % ndesc.
 * A write's payload lives in nblocks = ceil(length / 4096) consecutive
 * data blocks starting at logical block data_pos (ring block data_pos %
 * data_blocks); a payload never wraps: if it would, the writer skips to the
 * next multiple of data_blocks and the skipped blocks are padding.
 * Write-zeroes, trim and barriers have no payload.  A barrier ends the
 * current global epoch (flush or FUA on any device); entries carry the
 * epoch they belong to.
 *
 * Entry validity: descriptor slot seq % ndesc holds a valid entry seq iff
 *   (1) magic == RL_DESC_MAGIC and seq matches (a slot still holding the
 *       entry seq - ndesc from before the last wrap fails here);
 *   (2) op is known, device names a present device, offset + length fits
 *       the device, nblocks == ceil(length/4096) for writes and 0 otherwise,
 *       and the payload fits the ring without wrapping;
 *   (3) data_pos continues the previous entry: equal to its end, or the
 *       padding skip to the next multiple of data_blocks;
 *   (4) crc == crc32c(salt, descriptor bytes 0..59, payload bytes
 *       0..length).  The salt is random per log, so nothing written by an
 *       earlier incarnation of the log validates, and the checksum covers
 *       the payload, so a torn payload fails.
 *
 * Applied sequence.  Site s's header record says every entry with seq <=
 * applied[s] is durable on every leg of site s (safety rule 1).  Per-site
 * progress lives only there: entries are never rewritten.
 *
 * Ordering rules kept by the code:
 *   - Payloads are written with pwritev into the file range the mapping
 *     shows (the same page-cache pages), descriptors through the mapping;
 *     data pages are never mapped writable, so writeback of the log does
 *     not have to write-protect them in every thread (TLB shootdowns).
 *   - A client write is acknowledged once sealed in the log; a flush
 *     or FUA write once the log is durable up to it (fdatasync of the log,
 *     shared by every waiter: group commit).  Committed entries are also
 *     made durable in the background every commit_interval.
 *   - Workers ship only durable entries (safety rule 3).
 *   - A worker crosses a barrier (starts epoch k+1 on a site) only after
 *     the header durably records that site's applied >= the barrier seq:
 *     replay after a crash then re-sends only entries of the epoch the site
 *     was in, never an older epoch's over a newer one.
 *   - Space (slots and data blocks) before the tail is reused only after a
 *     durable header has every log-mode site's applied past it (rule 2).
 *
 * RECOVERY at open: read both header copies with pread and pick the newest
 * valid one.  tail = min(applied of log-mode sites) + 1.  Scan forward with
 * pread from tail, entry by entry, until the first entry that fails the
 * validity rules (or the ring is exhausted); every valid entry is recovered
 * and re-queued (the overlay index for reads is rebuilt by the caller, the
 * workers replay from their applied seq).  A torn or corrupt entry and
 * everything after it is never applied.  Then every descriptor slot that
 * does not hold a recovered entry is zeroed and synced before new entries
 * are written: an entry that a crashed run left after the first invalid
 * one can therefore never be mistaken for a new entry with the same seq.
 * New sequence numbers continue after the last recovered entry (and above
 * every recorded applied seq).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/magic.h>

#include "cfg.h"
#include "crc32c.h"
#include "io.h"
#include "event.h"
#include "pftrace.h"
#include "replog.h"
#include "report.h"

struct replog {
  char *path;
  int fd;
  uint64_t base;                 /* byte offset of header copy A */
  uint8_t *map;                  /* maps [base + desc_offset, base + log_size) */
  size_t map_len;
  uint8_t *desc_ring;            /* == map */
  uint8_t *data_ring;

  /* Geometry, copied from the header. */
  uint64_t ndesc, data_blocks, salt;
  uint64_t data_file_off;        /* base + data_offset: fixed at open, read without the lock */
  uint32_t log_sites;            /* sites whose applied holds the tail */
  struct replog_dev_id devs[RL_MAX_DEVICES];
  unsigned ndevices;
  uint64_t commit_interval_ns;

  /* This lock protects everything below, and the in-memory header. */
  pthread_mutex_t lock;
  pthread_cond_t space_cv;       /* tail advanced, or failed/stopping */
  pthread_cond_t durable_cv;     /* durable_seq or recorded applied advanced */
  pthread_cond_t syncer_cv;      /* work for the syncer */
  pthread_cond_t work_cv;        /* durable_seq advanced (workers) */

  struct rl_header hdr;          /* the newest durable header */
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
  uint8_t *slot_committed;       /* per slot: 1 once committed */
  uint64_t *slot_pos;            /* per slot: data_pos, for the tail */
  uint32_t *slot_crc;            /* per slot: checksum computed by replog_fill */
  uint64_t pending_applied[RL_MAX_SITES]; /* posted by workers, not yet in the header */
  uint32_t pending_dirty;        /* sites to switch to dirty-log mode in the next header */
  bool syncing;                  /* a sync round is under way */
  uint8_t pending_flags[RL_MAX_SITES]; /* site flags to set in the next header */
  uint8_t pending_clear[RL_MAX_SITES]; /* ... and to clear */
  uint8_t pending_dev_set[RL_MAX_DEVICES], pending_dev_clear[RL_MAX_DEVICES]; /* device flags */
  uint32_t pending_resume;       /* sites to switch back to log mode (resync) */
  uint64_t marked_upto;          /* release_fn called for entries below this */
  uint64_t only_copy_wait_ns;    /* != 0: the log holds the only copy of some
                                    entries: writers wait this long for space */
  uint64_t resume_applied[RL_MAX_SITES]; /* their applied seq then */
  replog_release_fn release_fn;  /* entries leaving the log while a site is dirty */
  void *release_opaque;
  uint32_t (*dl_sync_fn) (void *); /* make dirty-log marks durable (persistent dirty logs);
                                    returns the sites whose dirty logs could not be */
  void *dl_sync_opaque;
  int wakers[RL_MAX_SITES];      /* eventfds poked when workers have something to do */
  unsigned nwakers;

  unsigned flush_waiters, applied_waiters, space_waiters;
  bool failed;                   /* first failed sync: EIO for ever */
  bool stopping;
  bool syncer_running;
  pthread_t syncer;

  uint64_t syncs, header_writes, space_waits;
};

/* ---- format helpers ------------------------------------------------- */

int
replog_geometry (uint64_t size, uint64_t *ndesc, uint64_t *data_offset, uint64_t *data_blocks)
{
  uint64_t usable, n;

  if (size < RL_MIN_LOG_SIZE)
    return -1;
  usable = size - 2 * RL_HEADER_SIZE;
  n = usable / (RL_BLOCK + RL_DESC_SIZE);
  n &= ~(uint64_t) 63;
  if (n < 64)
    return -1;
  *ndesc = n;
  *data_offset = 2 * RL_HEADER_SIZE + n * RL_DESC_SIZE;
  *data_blocks = (size - *data_offset) / RL_BLOCK;
  return 0;
}

static uint32_t
header_crc (const struct rl_header *h)
{
  return crc32c (0, h, offsetof (struct rl_header, crc));
}

const char *
replog_header_check (const struct rl_header *h, uint64_t file_room)
{
  uint64_t nd, doff, db;
  unsigned i;

  if (memcmp (h->magic, RL_MAGIC, 8) != 0)
    return "bad magic";
  if (h->version != RL_VERSION)
    return "unsupported version";
  if (h->crc != header_crc (h))
    return "checksum mismatch";
  if (h->header_size != RL_HEADER_SIZE || h->block_size != RL_BLOCK ||
      h->desc_size != RL_DESC_SIZE)
    return "unsupported geometry";
  if (replog_geometry (h->log_size, &nd, &doff, &db) == -1 ||
      h->ndesc != nd || h->data_offset != doff || h->data_blocks != db ||
      h->desc_offset != 2 * RL_HEADER_SIZE)
    return "inconsistent geometry";
  if (h->log_size > file_room)
    return "log is larger than its file or device";
  for (i = 0; i < RL_MAX_SITES; i++)
    if (h->sites[i].mode > RL_MODE_DIRTY || h->sites[i].present > 1 ||
        (h->sites[i].present && h->sites[i].applied >= UINT64_C(1) << 63))
      return "bad site record";
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (h->devices[i].present > 1 ||
        (h->devices[i].present && memchr (h->devices[i].name, 0, RL_NAME_LEN) == NULL))
      return "bad device record";
  return NULL;
}

uint32_t
replog_desc_crc (uint64_t salt, const struct rl_desc *d, const void *payload)
{
  uint32_t c = crc32c (0, &salt, sizeof salt);
  c = crc32c (c, d, offsetof (struct rl_desc, crc));
  if (d->op == RL_OP_WRITE && payload)
    c = crc32c (c, payload, d->length);
  return c;
}

static uint64_t
now_ns (clockid_t clk)
{
  struct timespec ts;
  clock_gettime (clk, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Descriptors are stored through the mapping: the power-loss trace
 * records each one once it is complete (pftrace.h). */
static void
desc_traced (struct replog *rl, const struct rl_desc *d)
{
  pft_write (rl->fd, d, sizeof *d,
             rl->base + rl->hdr.desc_offset + (uint64_t) ((const uint8_t *) d - rl->map));
}

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

const struct rl_desc *
replog_desc (struct replog *rl, uint64_t seq)
{
  return desc_at (rl, seq);
}

const void *
replog_payload (struct replog *rl, const struct rl_desc *d)
{
  return rl->data_ring + (d->data_pos % rl->data_blocks) * RL_BLOCK;
}

/* ---- I/O helpers ----------------------------------------------------------- */

static int
write_zeroes (int fd, uint64_t off, uint64_t len)
{
  static const uint8_t zero[65536];
  while (len) {
    size_t n = len > sizeof zero ? sizeof zero : (size_t) len;
    if (io_pwrite_full (fd, zero, n, off) == -1)
      return -1;
    off += n;
    len -= n;
  }
  return 0;
}

/* Write the in-memory header rl->hdr as generation + 1 to its copy, no sync. */
static int
header_write (struct replog *rl, struct rl_header *h)
{
  h->generation++;
  h->crc = header_crc (h);
  return io_pwrite_full (rl->fd, h, sizeof *h, rl->base + (h->generation & 1) * RL_HEADER_SIZE);
}

/* ---- open: create or recover ------------------------------------------------ */

static bool
all_zero (const void *p, size_t n)
{
  const uint8_t *b = p;
  size_t i;
  for (i = 0; i < n; i++)
    if (b[i])
      return false;
  return true;
}

static int
create_log (struct replog *rl, int fd, uint64_t size, const struct replog_open_args *a)
{
  struct rl_header *h = &rl->hdr;
  uint64_t nd, doff, db, salt;
  struct stat st;

  if (replog_geometry (size, &nd, &doff, &db) == -1) {
    rep_error ("replog %s: size %" PRIu64 " is too small (at least %u bytes)",
               a->path, size, RL_MIN_LOG_SIZE);
    return -1;
  }
  if (fstat (fd, &st) == 0 && S_ISREG (st.st_mode)) {
    int e;
    if ((uint64_t) st.st_size < a->offset + size && ftruncate (fd, (off_t) (a->offset + size)) == -1) {
      rep_error ("replog %s: cannot extend to %" PRIu64 " bytes: %m", a->path, a->offset + size);
      return -1;
    }
    e = posix_fallocate (fd, (off_t) a->offset, (off_t) size);
    if (e != 0 && e != EOPNOTSUPP && e != EINVAL) {
      errno = e;
      rep_error ("replog %s: cannot allocate %" PRIu64 " bytes: %m", a->path, size);
      return -1;
    }
  }
  /* Zero-fill everything so no store into the mapping ever hits a hole
   * (SIGBUS on a full filesystem) and no stale entry survives. */
  if (write_zeroes (fd, a->offset, size) == -1) {
    rep_error ("replog %s: zero-filling the log: %m", a->path);
    return -1;
  }
  if (getrandom (&salt, sizeof salt, 0) != sizeof salt)
    salt = now_ns (CLOCK_REALTIME) ^ ((uint64_t) getpid () << 32);
  memset (h, 0, sizeof *h);
  memcpy (h->magic, RL_MAGIC, 8);
  h->version = RL_VERSION;
  h->header_size = RL_HEADER_SIZE;
  h->generation = 0;
  h->salt = salt;
  h->log_size = size;
  h->block_size = RL_BLOCK;
  h->desc_size = RL_DESC_SIZE;
  h->desc_offset = 2 * RL_HEADER_SIZE;
  h->ndesc = nd;
  h->data_offset = doff;
  h->data_blocks = db;
  h->created = (uint64_t) time (NULL);
  /* Both copies valid from the start: generation 1 in B, 2 in A. */
  if (header_write (rl, h) == -1 || header_write (rl, h) == -1 || fdatasync (fd) == -1) {
    rep_error ("replog %s: writing the new header: %m", a->path);
    return -1;
  }
  return 0;
}

/* Size of the file or device. */
static int
fd_size (int fd, uint64_t *size, bool *is_blk)
{
  struct stat st;
  if (fstat (fd, &st) == -1)
    return -1;
  *is_blk = S_ISBLK (st.st_mode);
  if (*is_blk)
    return ioctl (fd, BLKGETSIZE64, size);
  *size = (uint64_t) st.st_size;
  return 0;
}

/* Validate entry seq read with pread; returns NULL if valid, else why. */
static const char *
check_entry (struct replog *rl, uint64_t seq, const struct rl_desc *d,
             uint64_t expect_pos, bool first, uint8_t *buf)
{
  const struct rl_dev_rec *dev;
  uint64_t nb, ringb;

  if (d->magic != RL_DESC_MAGIC)
    return "no entry (magic)";
  if (d->seq != seq)
    return "stale entry (sequence)";
  if (d->op < RL_OP_WRITE || d->op > RL_OP_BARRIER)
    return "bad operation";
  if (d->device >= RL_MAX_DEVICES || !(dev = &rl->hdr.devices[d->device])->present)
    return "unknown device";
  if (d->op != RL_OP_BARRIER && (d->offset > dev->size || d->length > dev->size - d->offset))
    return "range outside the device";
  nb = d->op == RL_OP_WRITE ? ((uint64_t) d->length + RL_BLOCK - 1) / RL_BLOCK : 0;
  if (d->nblocks != nb || (d->op == RL_OP_WRITE && d->length == 0))
    return "bad length";
  ringb = d->data_pos % rl->data_blocks;
  if (ringb + nb > rl->data_blocks)
    return "payload wraps the ring";
  if (!first && d->data_pos != expect_pos &&
      !(d->data_pos > expect_pos && d->data_pos % rl->data_blocks == 0 &&
        d->data_pos - expect_pos < nb))
    return "data position does not follow the previous entry";
  if (nb && io_pread_full (rl->fd, buf, nb * RL_BLOCK,
                           rl->base + rl->hdr.data_offset + ringb * RL_BLOCK, false) == -1)
    return "read error";
  if (d->crc != replog_desc_crc (rl->salt, d, buf))
    return "checksum mismatch";
  return NULL;
}

static int
recover (struct replog *rl, struct replog_recovery *rec)
{
  uint64_t tail = UINT64_MAX, maxapplied = 0, seq, pos = 0, maxlen = 0;
  uint8_t *buf = NULL;
  unsigned i;
  const char *why = "end of log";
  uint64_t used = 0;

  for (i = 0; i < RL_MAX_SITES; i++) {
    const struct rl_site_rec *s = &rl->hdr.sites[i];
    if (!s->present)
      continue;
    if (s->applied > maxapplied)
      maxapplied = s->applied;
    if (s->mode == RL_MODE_LOG && s->applied + 1 < tail)
      tail = s->applied + 1;
  }
  if (tail == UINT64_MAX)
    tail = maxapplied + 1;
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (rl->hdr.devices[i].present && rl->hdr.devices[i].size > maxlen)
      maxlen = rl->hdr.devices[i].size;
  /* The largest payload the ring can hold. */
  if (!(buf = malloc (rl->data_blocks * RL_BLOCK > (64u << 20) ? (64u << 20) : rl->data_blocks * RL_BLOCK))) {
    rep_error ("malloc: %m");
    return -1;
  }

  rec->first_seq = tail;
  for (seq = tail; seq - tail < rl->ndesc; seq++) {
    struct rl_desc d;
    uint64_t off = rl->base + rl->hdr.desc_offset + slot_of (rl, seq) * RL_DESC_SIZE;
    const char *w;

    if (io_pread_full (rl->fd, &d, sizeof d, off, false) == -1) {
      rep_error ("replog %s: reading entry %" PRIu64 ": %m", rl->path, seq);
      free (buf);
      return -1;
    }
    if (d.op == RL_OP_WRITE && d.nblocks > (64u << 20) / RL_BLOCK) {
      why = "payload larger than any request";
      break;
    }
    w = check_entry (rl, seq, &d, pos, seq == tail, buf);
    if (w) {
      why = w;
      break;
    }
    if (seq != tail)
      used += d.data_pos - pos;          /* padding */
    used += d.nblocks;
    if (used > rl->data_blocks) {
      why = "data ring overrun";
      break;
    }
    pos = d.data_pos + d.nblocks;
    rl->slot_committed[slot_of (rl, seq)] = 1;
    rl->slot_pos[slot_of (rl, seq)] = d.data_pos;
    rec->entries++;
    rec->bytes += d.op == RL_OP_WRITE ? d.length : 0;
    rl->epoch = d.epoch + (d.op == RL_OP_BARRIER ? 1 : 0);
    rl->dirty_since_barrier = d.op != RL_OP_BARRIER;
  }
  free (buf);
  rec->last_seq = seq - 1;
  rec->stop_reason = why;
  rl->tail_seq = tail;
  rl->next_seq = seq;
  if (rl->next_seq <= maxapplied)
    rl->next_seq = maxapplied + 1;
  rl->committed_seq = rl->durable_seq = rl->next_seq - 1;
  rl->data_head = rec->entries ? pos : 0;
  /* A log-mode site that claims more than the log holds keeps its claim;
   * one that is behind the scan's end is consistent with it. */
  return 0;
}

/* Zero every descriptor slot that does not hold a recovered entry, so no
 * leftover of a crashed run can validate later (see RECOVERY above). */
static int
scrub_free_slots (struct replog *rl)
{
  uint64_t live = rl->next_seq - rl->tail_seq;     /* slots in use */
  uint64_t start, n, first;
  uint64_t ringoff = rl->base + rl->hdr.desc_offset;

  if (live >= rl->ndesc)
    return 0;
  n = rl->ndesc - live;
  start = slot_of (rl, rl->next_seq);
  first = n < rl->ndesc - start ? n : rl->ndesc - start;
  if (write_zeroes (rl->fd, ringoff + start * RL_DESC_SIZE, first * RL_DESC_SIZE) == -1 ||
      (n > first && write_zeroes (rl->fd, ringoff, (n - first) * RL_DESC_SIZE) == -1))
    return -1;
  return 0;
}

/* Check the configured identity against the header (safety rule 7) and
 * update the header to the configuration. */
static int
check_identity (struct replog *rl, const struct replog_open_args *a, struct replog_recovery *rec)
{
  struct rl_header *h = &rl->hdr;
  bool used_dev[RL_MAX_DEVICES] = { false };
  uint64_t seq;
  unsigned i;

  /* Which devices still have entries in the log? */
  for (seq = rec->first_seq; seq - rec->first_seq < rec->entries; seq++) {
    struct rl_desc d;
    if (io_pread_full (rl->fd, &d, sizeof d,
                       rl->base + h->desc_offset + slot_of (rl, seq) * RL_DESC_SIZE, false) == -1) {
      rep_error ("replog %s: %m", rl->path);
      return -1;
    }
    if (d.op != RL_OP_BARRIER)
      used_dev[d.device] = true;
  }
  for (i = 0; i < RL_MAX_DEVICES; i++) {
    const struct rl_dev_rec *r = &h->devices[i];
    if (!used_dev[i])
      continue;
    if (i >= a->ndevices || strcmp (r->name, a->devices[i].name) != 0) {
      rep_error ("replog %s: device '%s' (number %u) still has entries in the log but the "
                 "configuration %s; restore the previous configuration so the log can drain",
                 rl->path, r->name, i, i >= a->ndevices ? "drops it" : "renames or reorders it");
      return -1;
    }
    if (r->size != a->devices[i].size || r->block_size != a->devices[i].block_size) {
      rep_error ("replog %s: device '%s' still has entries in the log but its size or block "
                 "size changed (%" PRIu64 "/%u in the log, %" PRIu64 "/%u now)", rl->path,
                 r->name, r->size, r->block_size, a->devices[i].size, a->devices[i].block_size);
      return -1;
    }
  }
  for (i = 0; i < RL_MAX_SITES; i++) {
    struct rl_site_rec *s = &h->sites[i];
    bool want = a->sites & (1u << i);
    if (s->present && !want && s->mode == RL_MODE_LOG && rec->entries && s->applied < rec->last_seq) {
      rep_error ("replog %s: site %u still needs %" PRIu64 " entries of the log but the "
                 "configuration drops it", rl->path, i, rec->last_seq - s->applied);
      return -1;
    }
  }
  /* Update the identity. */
  for (i = 0; i < RL_MAX_DEVICES; i++) {
    struct rl_dev_rec *r = &h->devices[i];
    /* A device's flags stay with it (same name, same slot). */
    uint8_t flags = i < a->ndevices && r->present && !strcmp (r->name, a->devices[i].name)
      ? r->flags : 0;
    memset (r, 0, sizeof *r);
    r->flags = flags;
    if (i < a->ndevices) {
      snprintf (r->name, sizeof r->name, "%s", a->devices[i].name);
      r->size = a->devices[i].size;
      r->block_size = a->devices[i].block_size;
      r->present = 1;
    }
  }
  h->ndevices = a->ndevices;
  /* Where a new site starts in the log: with the oldest entry still
   * needed, so a leg trusted to equal the local leg also gets what the
   * local leg has not applied yet. */
  {
    uint64_t start = rl->next_seq - 1;
    for (i = 0; i < RL_MAX_SITES; i++)
      if (h->sites[i].present && (a->sites & (1u << i)) && h->sites[i].mode == RL_MODE_LOG &&
          h->sites[i].applied < start)
        start = h->sites[i].applied;
    if (start + 1 < rl->tail_seq)
      start = rl->tail_seq - 1;
    h->nsites = 0;
    for (i = 0; i < RL_MAX_SITES; i++) {
      struct rl_site_rec *s = &h->sites[i];
      bool want = a->sites & (1u << i);
      if (want && !s->present) {
        /* A new site starts in log mode only when its legs are trusted
         * (nosync); otherwise it needs an initial sync: dirty-log mode. */
        memset (s, 0, sizeof *s);
        s->present = 1;
        s->applied = start;
        s->mode = (a->log_sites & (1u << i)) ? RL_MODE_LOG : RL_MODE_DIRTY;
        rec->new_sites |= 1u << i;
      }
      else if (!want)
        memset (s, 0, sizeof *s);
      h->nsites += s->present;
    }
  }
  h->clean = 0;
  return 0;
}

/* The tail a header h allows: the oldest entry a log-mode site (or one
 * going back to log mode) still needs; *dirty gets the dirty-mode sites. */
static uint64_t
tail_of (struct replog *rl, const struct rl_header *h, uint32_t *dirty)
{
  uint64_t t = rl->next_seq;
  unsigned i;

  *dirty = 0;
  for (i = 0; i < RL_MAX_SITES; i++) {
    const struct rl_site_rec *s = &h->sites[i];
    if (s->present && (rl->pending_resume & (1u << i))) {
      if (rl->resume_applied[i] + 1 < t)  /* returning: its entries are held already */
        t = rl->resume_applied[i] + 1;
      continue;
    }
    if (s->present && s->mode == RL_MODE_LOG && s->applied + 1 < t)
      t = s->applied + 1;
    if (s->present && s->mode == RL_MODE_DIRTY)
      *dirty |= 1u << i;
  }
  return t;
}

/* Entries that header h lets leave the log and that dirty-mode sites
 * lack: record their regions (release_fn, under the lock).  Called before
 * h is written, so that the records are made durable before a header
 * that lets the space go exists (and once more after, a no-op then).
 * True if anything was recorded. */
static bool
mark_releases (struct replog *rl, const struct rl_header *h)
{
  uint32_t dirty;
  uint64_t t = tail_of (rl, h, &dirty), seq;
  bool marked = false;
  unsigned i;

  if (rl->marked_upto < rl->tail_seq)
    rl->marked_upto = rl->tail_seq;
  if (!dirty || !rl->release_fn || t <= rl->marked_upto)
    return false;
  for (seq = rl->marked_upto; seq < t; seq++) {
    const struct rl_desc *d = desc_at (rl, seq);
    uint32_t need = 0;
    if (d->op == RL_OP_BARRIER || d->seq != seq)
      continue;
    for (i = 0; i < RL_MAX_SITES; i++)
      if ((dirty & (1u << i)) && h->sites[i].applied < seq)
        need |= 1u << i;
    if (need) {
      rl->release_fn (rl->release_opaque, need, d);
      marked = true;
    }
  }
  rl->marked_upto = t;
  return marked;
}

static void
recompute_tail (struct replog *rl)
{
  uint32_t dirty, dirty_old;
  uint64_t t = tail_of (rl, &rl->hdr, &dirty), t_old = tail_of (rl, &rl->hdr_old, &dirty_old);

  if (t_old < t)
    t = t_old;                           /* the fall-back copy still needs it */

  if (t <= rl->tail_seq)
    return;
  /* Normally recorded (and synced) before the header was written; if
   * not (the first header after open), now, durably, before the space
   * can be reused (the lock is dropped for that I/O; sync rounds, the
   * only callers once the log runs, are one at a time, so nothing else
   * moves the tail meanwhile). */
  if (mark_releases (rl, &rl->hdr) && rl->dl_sync_fn && rl->syncer_running) {
    uint32_t lost;
    unsigned i;
    pthread_mutex_unlock (&rl->lock);
    lost = rl->dl_sync_fn (rl->dl_sync_opaque);
    pthread_mutex_lock (&rl->lock);
    if (lost) {
      /* Not recorded: the space stays until a header says so. */
      for (i = 0; i < RL_MAX_SITES; i++)
        if (lost & (1u << i))
          rl->pending_flags[i] |= RL_SITE_DLOG_LOST;
      return;
    }
  }
  rl->tail_seq = t;
}

static void
wake_workers (struct replog *rl)
{
  unsigned i;
  uint64_t one = 1;
  pthread_cond_broadcast (&rl->work_cv);
  for (i = 0; i < rl->nwakers; i++)
    if (write (rl->wakers[i], &one, sizeof one) < 0) {
      /* counter full: the worker has a wake-up pending anyway */
    }
}

int
replog_open (const struct replog_open_args *a, struct replog **rlp, struct replog_recovery *rec)
{
  struct replog *rl;
  struct rl_header hc[2];
  const char *why[2];
  uint64_t fsize;
  bool is_blk = false, blank, create, existed;
  struct statfs sfs;
  int fd, flags = O_RDWR | O_CLOEXEC, use;
  unsigned i;
  struct stat st;

  pft_init ();
  memset (rec, 0, sizeof *rec);
  if (a->ndevices > RL_MAX_DEVICES) {
    rep_error ("at most %d devices share one log", RL_MAX_DEVICES);
    return -1;
  }
  if (a->offset % RL_BLOCK) {
    rep_error ("replog %s: offset must be a multiple of %d", a->path, RL_BLOCK);
    return -1;
  }
  existed = stat (a->path, &st) == 0;
  if (existed && S_ISBLK (st.st_mode))
    flags |= O_EXCL;                         /* one owner (safety rule 8) */
  else if (a->mode != LOG_MODE_OPEN)
    flags |= O_CREAT;
  fd = open (a->path, flags, 0600);
  if (fd == -1) {
    if (errno == EBUSY)
      rep_error ("replog %s: the device is in use (opened exclusively elsewhere)", a->path);
    else
      rep_error ("replog %s: cannot open: %m", a->path);
    return -1;
  }
  if (flock (fd, LOCK_EX | LOCK_NB) == -1) {
    if (errno == EWOULDBLOCK)
      rep_error ("replog %s: locked by another instance (only one may own a log; if one was "
                 "just stopped or killed, retry in a moment)", a->path);
    else
      rep_error ("replog %s: flock: %m", a->path);
    close (fd);
    return -1;
  }
  if (fd_size (fd, &fsize, &is_blk) == -1) {
    rep_error ("replog %s: cannot get its size: %m", a->path);
    close (fd);
    return -1;
  }
  /* A block device's node lives on /dev's devtmpfs: only a file's own
   * filesystem says whether its flushes can be durable. */
  if (!is_blk && fstatfs (fd, &sfs) == 0 &&
      (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC))
    rec->on_tmpfs = true;
  /* Safety rule 14: the log's name must survive a power loss before any
   * entry goes into it (or mode=auto would create a blank log over flushed
   * writes after one).  Synced at every open, not only at the creation: a
   * crash may have come between the creation and the sync. */
  if (!is_blk) {
    if (!existed)
      pft_create (fd);
    if (io_sync_parent_dir (a->path) == -1) {
      rep_error ("replog %s: cannot sync its directory (so that its name survives a power "
                 "loss): %m; refusing to start", a->path);
      close (fd);
      return -1;
    }
  }

  if (!(rl = calloc (1, sizeof *rl)) || !(rl->path = strdup (a->path))) {
    rep_error ("calloc: %m");
    free (rl);
    close (fd);
    return -1;
  }
  rl->fd = fd;
  rl->base = a->offset;
  rl->log_sites = a->log_sites;
  rl->commit_interval_ns = a->commit_interval_ms * 1000000u;
  pthread_mutex_init (&rl->lock, NULL);
  pthread_cond_init (&rl->space_cv, NULL);
  pthread_cond_init (&rl->durable_cv, NULL);
  pthread_cond_init (&rl->syncer_cv, NULL);
  pthread_cond_init (&rl->work_cv, NULL);

  /* Read both header copies (pread, never through a mapping). */
  memset (hc, 0, sizeof hc);
  blank = true;
  for (i = 0; i < 2; i++) {
    if (fsize >= a->offset + (i + 1) * RL_HEADER_SIZE) {
      if (io_pread_full (fd, &hc[i], RL_HEADER_SIZE, a->offset + i * RL_HEADER_SIZE, false) == -1) {
        rep_error ("replog %s: reading header copy %c: %m", a->path, 'A' + i);
        goto err;
      }
    }
    if (!all_zero (&hc[i], RL_HEADER_SIZE))
      blank = false;
    why[i] = replog_header_check (&hc[i], fsize > a->offset ? fsize - a->offset : 0);
    /* A copy is written with generation & 1 == its index (header_write):
     * another parity is the other copy seen from a wrong offset, and
     * writing generation + 1 would overwrite it in place. */
    if (!why[i] && (hc[i].generation & 1) != i)
      why[i] = "generation does not belong to this copy (wrong offset?)";
  }

  create = a->mode == LOG_MODE_CREATE;
  if (a->mode == LOG_MODE_AUTO && blank)
    create = true;
  if (create) {
    uint64_t size = a->size;
    if (is_blk && size > fsize - a->offset)
      size = fsize - a->offset;
    if (is_blk && size == 0) {
      rep_error ("replog %s: offset is beyond the end of the device", a->path);
      goto err;
    }
    if (create_log (rl, fd, size, a) == -1)
      goto err;
    rec->created = true;
  }
  else {
    if (why[0] && why[1]) {
      if (a->mode == LOG_MODE_OPEN && blank)
        rep_error ("replog %s: no log here (blank); use mode=create or auto", a->path);
      else
        rep_error ("replog %s: both header copies are invalid (A: %s; B: %s); "
                   "refusing to start (mode=create would reinitialise it and lose its entries)",
                   a->path, why[0], why[1]);
      goto err;
    }
    if (why[0])
      use = 1;
    else if (why[1])
      use = 0;
    else
      use = hc[1].generation > hc[0].generation;
    rec->other_copy_bad = why[!use] != NULL;
    rl->hdr = hc[use];
    rec->header_copy = use;
    if (rec->other_copy_bad)
      rep_warn ("replog %s: header copy %c is invalid (%s); using copy %c (generation %" PRIu64 ")",
                a->path, 'A' + !use, why[!use], 'A' + use, rl->hdr.generation);
    /* Safety rule 9: a log with holes or shorter than its header is refused. */
    if (!is_blk) {
      off_t hole = lseek (fd, (off_t) a->offset, SEEK_HOLE);
      if (hole != (off_t) -1 && (uint64_t) hole < a->offset + rl->hdr.log_size) {
        rep_error ("replog %s: the log file has a hole at byte %lld (it was not created by "
                   "us, or was truncated/sparsified); refusing to map it", a->path, (long long) hole);
        goto err;
      }
    }
  }
  rec->generation = rl->hdr.generation;
  rl->salt = rl->hdr.salt;
  rl->ndesc = rl->hdr.ndesc;
  rl->data_blocks = rl->hdr.data_blocks;

  rl->slot_committed = calloc (rl->ndesc, 1);
  rl->slot_pos = calloc (rl->ndesc, sizeof *rl->slot_pos);
  rl->slot_crc = calloc (rl->ndesc, sizeof *rl->slot_crc);
  if (!rl->slot_committed || !rl->slot_pos || !rl->slot_crc) {
    rep_error ("calloc: %m");
    goto err;
  }
  if (recover (rl, rec) == -1)
    goto err;
  if (check_identity (rl, a, rec) == -1)
    goto err;
  for (i = 0; i < a->ndevices; i++)
    rl->devs[i] = a->devices[i];
  rl->ndevices = a->ndevices;
  if (scrub_free_slots (rl) == -1) {
    rep_error ("replog %s: clearing free descriptor slots: %m", a->path);
    goto err;
  }
  /* Both copies, one after the other: the copy recovery falls back to
   * must know the devices and sites too (and a damaged copy is rewritten). */
  if (header_write (rl, &rl->hdr) == -1 || fdatasync (fd) == -1 ||
      header_write (rl, &rl->hdr) == -1 || fdatasync (fd) == -1) {
    rep_error ("replog %s: writing the header: %m", a->path);
    goto err;
  }
  rl->hdr_old = rl->hdr;
  for (i = 0; i < RL_MAX_SITES; i++)
    rl->pending_applied[i] = rl->hdr.sites[i].applied;
  recompute_tail (rl);

  rl->map_len = rl->hdr.log_size - rl->hdr.desc_offset;
  rl->map = mmap (NULL, rl->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                  (off_t) (a->offset + rl->hdr.desc_offset));
  if (rl->map == MAP_FAILED) {
    rl->map = NULL;
    rep_error ("replog %s: mmap: %m", a->path);
    goto err;
  }
  rl->desc_ring = rl->map;
  rl->data_ring = rl->map + (rl->hdr.data_offset - rl->hdr.desc_offset);
  rl->data_file_off = rl->base + rl->hdr.data_offset;
  *rlp = rl;
  return 0;

 err:
  replog_close (rl);
  return -1;
}

/* ---- syncer: group commit and header writes ------------------------------------ */

static bool
header_pending (struct replog *rl)
{
  unsigned i;
  if (rl->pending_dirty || rl->pending_resume)
    return true;
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if ((rl->pending_dev_set[i] & ~rl->hdr.devices[i].flags) ||
        (rl->pending_dev_clear[i] & rl->hdr.devices[i].flags))
      return true;
  for (i = 0; i < RL_MAX_SITES; i++)
    if ((rl->pending_flags[i] & ~rl->hdr.sites[i].flags) ||
        (rl->pending_clear[i] & rl->hdr.sites[i].flags))
      return true;
  for (i = 0; i < RL_MAX_SITES; i++)
    if (rl->hdr.sites[i].present && rl->pending_applied[i] > rl->hdr.sites[i].applied)
      return true;
  {
    /* The other copy still holds space the newest one released: write it
     * too (batched like any header write; at once for space waiters). */
    uint32_t d;
    if (tail_of (rl, &rl->hdr_old, &d) < tail_of (rl, &rl->hdr, &d))
      return true;
  }
  return false;
}

/* The header as it will be once the posted applied values are in. */
static struct rl_header
header_with_pending (struct replog *rl)
{
  struct rl_header h = rl->hdr;
  unsigned i;
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (h.devices[i].present)
      h.devices[i].flags = (uint8_t) ((h.devices[i].flags | rl->pending_dev_set[i]) &
                                      ~rl->pending_dev_clear[i]);
  for (i = 0; i < RL_MAX_SITES; i++) {
    if (h.sites[i].present)
      h.sites[i].flags = (uint8_t) ((h.sites[i].flags | rl->pending_flags[i]) & ~rl->pending_clear[i]);
    if (h.sites[i].present && (rl->pending_dirty & (1u << i)))
      h.sites[i].mode = RL_MODE_DIRTY;
    else if (h.sites[i].present && (rl->pending_resume & (1u << i))) {
      h.sites[i].mode = RL_MODE_LOG;
      h.sites[i].applied = rl->resume_applied[i];
      h.sites[i].flags |= RL_SITE_RESYNC;
    }
    else if (h.sites[i].present && h.sites[i].mode == RL_MODE_LOG &&
             rl->pending_applied[i] > h.sites[i].applied)
      h.sites[i].applied = rl->pending_applied[i];
  }
  return h;
}

static void
fail_log (struct replog *rl, const char *what)
{
  if (!rl->failed)
    rep_event (EV_LOG_FAILED, -1, NULL, "replog %s: %s failed: %m; the log is now FAILED: flushes "
               "fail with EIO until the instance is restarted", rl->path, what);
  rl->failed = true;
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_cond_broadcast (&rl->space_cv);
  wake_workers (rl);
}

static void sync_round_locked (struct replog *rl);

/* One sync round, called with the lock held; drops it during I/O.  Run by
 * the syncer, or by a writer waiting for durability when no round is
 * under way (one thread hop less on a synchronous write's path). */
static void
sync_round (struct replog *rl)
{
  while (rl->syncing && !rl->failed)     /* one round at a time */
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  if (rl->failed || (rl->committed_seq <= rl->durable_seq && !header_pending (rl)))
    return;                              /* the round we waited for did it all */
  rl->syncing = true;
  sync_round_locked (rl);
  rl->syncing = false;
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_cond_signal (&rl->syncer_cv);
}

static void
sync_round_locked (struct replog *rl)
{
  uint64_t c = rl->committed_seq;
  bool hdr = header_pending (rl);
  struct rl_header h = header_with_pending (rl);
  uint32_t dirty = rl->pending_dirty, resume = rl->pending_resume, lost = 0;
  unsigned i;
  int r = 0;

  if (hdr)
    mark_releases (rl, &h);              /* entries this header lets go */
  pthread_mutex_unlock (&rl->lock);
  /* Dirty-log bits set before this header (entries a returning site will
   * not get from the log, a site moved to dirty-log mode) are durable
   * before it. */
  if (hdr && rl->dl_sync_fn)
    lost = rl->dl_sync_fn (rl->dl_sync_opaque);
  /* A site whose dirty log could not be written: this header, which may
   * let entries go that only its bitmaps were to record, says instead
   * that every region of the site is to be copied after a restart.  A
   * site that is a consistent prefix in this header lacks nothing: its
   * bitmaps do not count, and the flag goes. */
  for (i = 0; i < RL_MAX_SITES; i++) {
    struct rl_site_rec *sr = &h.sites[i];
    if (!sr->present)
      continue;
    if (sr->mode == RL_MODE_LOG && !(sr->flags & (RL_SITE_RESYNC | RL_SITE_IN_DOUBT)))
      sr->flags &= (uint8_t) ~RL_SITE_DLOG_LOST;
    else if (lost & (1u << i))
      sr->flags |= RL_SITE_DLOG_LOST;
  }
  if (hdr)
    r = header_write (rl, &h);
  if (r == 0) {
    pft_sync (rl->fd, 'S');
    r = fdatasync (rl->fd);
    if (r == 0)
      pft_sync (rl->fd, 'D');
  }
  pthread_mutex_lock (&rl->lock);
  if (r == -1) {
    fail_log (rl, hdr ? "writing the header" : "fdatasync");
    return;
  }
  rl->syncs++;
  rep_debugc (REP_DBG_LOG, "replog: sync round: durable up to seq %" PRIu64 "%s", c,
              hdr ? ", header written" : "");
  if (c > rl->durable_seq) {
    rl->durable_seq = c;
    wake_workers (rl);
  }
  if (hdr) {
    rl->hdr_old = rl->hdr;
    rl->hdr = h;
    rl->pending_dirty &= ~dirty;
    rl->pending_resume &= ~resume;
    /* Flag requests the durable header now reflects are done with. */
    for (i = 0; i < RL_MAX_SITES; i++) {
      rl->pending_flags[i] &= (uint8_t) ~h.sites[i].flags;
      rl->pending_clear[i] &= h.sites[i].flags;
      /* RL_SITE_DLOG_LOST was decided for this header, above. */
      rl->pending_flags[i] &= (uint8_t) ~RL_SITE_DLOG_LOST;
      rl->pending_clear[i] &= (uint8_t) ~RL_SITE_DLOG_LOST;
    }
    for (i = 0; i < RL_MAX_DEVICES; i++) {
      rl->pending_dev_set[i] &= (uint8_t) ~h.devices[i].flags;
      rl->pending_dev_clear[i] &= h.devices[i].flags;
    }
    for (i = 0; i < RL_MAX_SITES; i++)
      if ((resume & (1u << i)) && rl->pending_applied[i] < h.sites[i].applied)
        rl->pending_applied[i] = h.sites[i].applied;
    rl->header_writes++;
    recompute_tail (rl);
    pthread_cond_broadcast (&rl->space_cv);
  }
  pthread_cond_broadcast (&rl->durable_cv);
}

static void *
syncer_thread (void *arg)
{
  struct replog *rl = arg;
  uint64_t first_pending = 0;

  pthread_mutex_lock (&rl->lock);
  while (!rl->failed) {
    bool data = rl->committed_seq > rl->durable_seq;
    bool hdr = header_pending (rl);
    bool urgent = rl->flush_waiters || rl->applied_waiters || rl->space_waiters;

    if (!data && !hdr) {
      if (rl->stopping)
        break;
      first_pending = 0;
      pthread_cond_wait (&rl->syncer_cv, &rl->lock);
      continue;
    }
    if (!urgent && !rl->stopping) {
      /* Background group commit: wait one interval for more to batch. */
      uint64_t now = now_ns (CLOCK_MONOTONIC);
      if (!first_pending)
        first_pending = now;
      if (now - first_pending < rl->commit_interval_ns) {
        uint64_t until = now_ns (CLOCK_REALTIME) + (rl->commit_interval_ns - (now - first_pending));
        struct timespec ts = { .tv_sec = (time_t) (until / 1000000000u),
                               .tv_nsec = (long) (until % 1000000000u) };
        pthread_cond_timedwait (&rl->syncer_cv, &rl->lock, &ts);
        continue;
      }
    }
    first_pending = 0;
    sync_round (rl);
  }
  pthread_mutex_unlock (&rl->lock);
  return NULL;
}

int
replog_start (struct replog *rl)
{
  int e;
  if (rl->syncer_running)
    return 0;
  rl->stopping = false;
  e = pthread_create (&rl->syncer, NULL, syncer_thread, rl);
  if (e) {
    errno = e;
    rep_error ("replog: cannot start the syncer thread: %m");
    return -1;
  }
  rl->syncer_running = true;
  return 0;
}

void
replog_stop (struct replog *rl)
{
  if (!rl)
    return;
  pthread_mutex_lock (&rl->lock);
  rl->stopping = true;
  pthread_cond_broadcast (&rl->syncer_cv);
  pthread_cond_broadcast (&rl->space_cv);
  wake_workers (rl);
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_mutex_unlock (&rl->lock);
  if (rl->syncer_running) {
    pthread_join (rl->syncer, NULL);
    rl->syncer_running = false;
  }
  /* Final header: record what was posted, and whether the log is drained. */
  pthread_mutex_lock (&rl->lock);
  if (!rl->failed) {
    bool drained = true;
    unsigned i;
    for (i = 0; i < RL_MAX_SITES; i++)
      if (rl->hdr.sites[i].present && rl->hdr.sites[i].mode == RL_MODE_LOG &&
          rl->pending_applied[i] < rl->committed_seq)
        drained = false;
    if (header_pending (rl) || drained != (rl->hdr.clean == 1)) {
      struct rl_header h = header_with_pending (rl);
      h.clean = drained;
      if (header_write (rl, &h) == -1 || fdatasync (rl->fd) == -1)
        fail_log (rl, "writing the final header");
      else {
        rl->hdr_old = rl->hdr;
        rl->hdr = h;
      }
    }
  }
  pthread_mutex_unlock (&rl->lock);
}

void
replog_close (struct replog *rl)
{
  if (!rl)
    return;
  if (rl->syncer_running)
    replog_stop (rl);
  if (rl->map)
    munmap (rl->map, rl->map_len);
  if (rl->fd >= 0)
    close (rl->fd);
  free (rl->slot_committed);
  free (rl->slot_pos);
  free (rl->slot_crc);
  pthread_mutex_destroy (&rl->lock);
  pthread_cond_destroy (&rl->space_cv);
  pthread_cond_destroy (&rl->durable_cv);
  pthread_cond_destroy (&rl->syncer_cv);
  pthread_cond_destroy (&rl->work_cv);
  free (rl->path);
  free (rl);
}

/* ---- writers ----------------------------------------------------------------- */

/* Where an entry of nb blocks would start, or UINT64_MAX if it does not fit now. */
static uint64_t
place (struct replog *rl, uint64_t nb)
{
  uint64_t pos = rl->data_head, tailpos;

  if (rl->next_seq - rl->tail_seq >= rl->ndesc)
    return UINT64_MAX;
  if (nb == 0)
    return pos;
  if (pos % rl->data_blocks + nb > rl->data_blocks)
    pos += rl->data_blocks - pos % rl->data_blocks;      /* skip to the wrap */
  tailpos = rl->tail_seq < rl->next_seq ? rl->slot_pos[slot_of (rl, rl->tail_seq)] : rl->data_head;
  if (pos + nb - tailpos > rl->data_blocks)
    return UINT64_MAX;
  return pos;
}

int
replog_reserve (struct replog *rl, unsigned dev, int op, int flags,
                uint64_t offset, uint32_t length, uint64_t *seqp, void **payload)
{
  uint64_t nb = op == RL_OP_WRITE ? ((uint64_t) length + RL_BLOCK - 1) / RL_BLOCK : 0;
  uint64_t pos, seq;
  struct rl_desc *d;
  bool waited = false;
  uint64_t wait_start = 0;

  if (nb > rl->data_blocks / 2) {
    errno = EINVAL;
    rep_error ("replog: a %u-byte request does not fit this log", length);
    return -1;
  }
  pthread_mutex_lock (&rl->lock);
  for (;;) {
    if (rl->failed || rl->stopping) {
      pthread_mutex_unlock (&rl->lock);
      errno = rl->failed ? EIO : ESHUTDOWN;
      return -1;
    }
    if ((pos = place (rl, nb)) != UINT64_MAX)
      break;
    /* Full: wait for the workers to drain (they checkpoint when they see
     * space_waiters) and the syncer to record it. */
    if (!waited)
      rl->space_waits++;
    if (!waited)
      wait_start = now_ns (CLOCK_MONOTONIC);
    waited = true;
    rl->space_waiters++;
    pthread_cond_broadcast (&rl->syncer_cv);
    wake_workers (rl);
    if (rl->only_copy_wait_ns) {
      /* Safety rule 4: nothing can release the space; do not wait for ever. */
      uint64_t now = now_ns (CLOCK_MONOTONIC);
      uint64_t until = now_ns (CLOCK_REALTIME) + (rl->only_copy_wait_ns > now - wait_start ?
                                                  rl->only_copy_wait_ns - (now - wait_start) : 0);
      struct timespec ts = { .tv_sec = (time_t) (until / 1000000000u),
                             .tv_nsec = (long) (until % 1000000000u) };
      if (now - wait_start >= rl->only_copy_wait_ns) {
        rl->space_waiters--;
        pthread_mutex_unlock (&rl->lock);
        rep_error ("replog: the log is full and holds the only copy of entries whose local leg "
                   "failed (no remote site has them): the write fails");
        errno = EIO;
        return -1;
      }
      pthread_cond_timedwait (&rl->space_cv, &rl->lock, &ts);
    }
    else
      pthread_cond_wait (&rl->space_cv, &rl->lock);
    rl->space_waiters--;
  }
  seq = rl->next_seq++;
  rl->data_head = pos + nb;
  rl->slot_committed[slot_of (rl, seq)] = 0;
  rl->slot_pos[slot_of (rl, seq)] = pos;
  d = desc_at (rl, seq);
  memset (d, 0, sizeof *d);               /* magic 0: invalid until commit */
  d->op = (uint8_t) op;
  d->flags = (uint8_t) flags;
  d->device = (uint16_t) dev;
  d->seq = seq;
  d->offset = offset;
  d->length = length;
  d->nblocks = (uint32_t) nb;
  d->data_pos = pos;
  d->epoch = rl->epoch;
  if (op == RL_OP_BARRIER) {
    rl->epoch++;
    rl->dirty_since_barrier = false;
  }
  else
    rl->dirty_since_barrier = true;
  pthread_mutex_unlock (&rl->lock);

  /* site_oldest_age_ms reads it without the lock (0: being reserved) */
  __atomic_store_n (&d->time_ns, now_ns (CLOCK_REALTIME), __ATOMIC_RELAXED);
  desc_traced (rl, d);
  *seqp = seq;
  if (payload)
    *payload = nb ? rl->data_ring + (pos % rl->data_blocks) * RL_BLOCK : NULL;
  return 0;
}

int
replog_fill (struct replog *rl, uint64_t seq, const void *buf)
{
  static const uint8_t zero[RL_BLOCK];
  struct rl_desc *d = desc_at (rl, seq);
  uint64_t off = rl->data_file_off + (d->data_pos % rl->data_blocks) * RL_BLOCK;
  uint32_t slack = d->length % RL_BLOCK ? RL_BLOCK - d->length % RL_BLOCK : 0;
  struct iovec iov[2] = { { (void *) buf, d->length }, { (void *) zero, slack } };
  size_t want = (size_t) d->length + slack, done = 0;

  /* pwritev into the log file's page cache: the same pages the mapping
   * shows, but never written through it, so writeback does not have to
   * write-protect them in every thread's page tables. */
  while (done < want) {
    ssize_t r = pwritev (rl->fd, iov, slack ? 2 : 1, (off_t) (off + done));
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      int e = r == 0 ? EIO : errno;
      /* The entry must never ship: fail the log (nothing becomes durable
       * from now on, flushes fail with EIO). */
      pthread_mutex_lock (&rl->lock);
      errno = e;
      fail_log (rl, "writing a payload");
      pthread_mutex_unlock (&rl->lock);
      errno = e;
      return -1;
    }
    done += (size_t) r;
    if (done < want) {                     /* short: advance the iovecs */
      size_t skip = (size_t) r;
      if (skip >= iov[0].iov_len) {
        skip -= iov[0].iov_len;
        iov[0] = iov[1];
        iov[0].iov_base = (uint8_t *) iov[0].iov_base + skip;
        iov[0].iov_len -= skip;
        slack = 0;
      }
      else {
        iov[0].iov_base = (uint8_t *) iov[0].iov_base + skip;
        iov[0].iov_len -= skip;
      }
    }
  }
  pft_write (rl->fd, buf, d->length, off);
  pft_zero (rl->fd, off + d->length, slack);
  {
    struct rl_desc tmp = *d;
    tmp.magic = RL_DESC_MAGIC;
    rl->slot_crc[slot_of (rl, seq)] = replog_desc_crc (rl->salt, &tmp, buf);
  }
  return 0;
}

void
replog_commit (struct replog *rl, uint64_t seq)
{
  struct rl_desc *d = desc_at (rl, seq);

  d->magic = RL_DESC_MAGIC;
  d->crc = d->op == RL_OP_WRITE ? rl->slot_crc[slot_of (rl, seq)] : replog_desc_crc (rl->salt, d, NULL);

  desc_traced (rl, d);
  pthread_mutex_lock (&rl->lock);
  rl->slot_committed[slot_of (rl, seq)] = 1;
  if (seq == rl->committed_seq + 1) {
    while (rl->committed_seq + 1 < rl->next_seq &&
           rl->slot_committed[slot_of (rl, rl->committed_seq + 1)])
      rl->committed_seq++;
    pthread_cond_signal (&rl->syncer_cv);
  }
  pthread_mutex_unlock (&rl->lock);
}

int
replog_barrier (struct replog *rl, int flags, uint64_t *seq)
{
  bool need;

  pthread_mutex_lock (&rl->lock);
  need = rl->dirty_since_barrier;
  *seq = rl->next_seq - 1;
  pthread_mutex_unlock (&rl->lock);
  if (!need)
    return 0;
  if (replog_reserve (rl, 0, RL_OP_BARRIER, flags, 0, 0, seq, NULL) == -1)
    return -1;
  replog_commit (rl, *seq);
  return 0;
}

int
replog_wait_durable (struct replog *rl, uint64_t seq)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  rl->flush_waiters++;
  while (rl->durable_seq < seq && !rl->failed) {
    if (!rl->syncing && rl->syncer_running && !rl->stopping && rl->committed_seq >= seq) {
      sync_round (rl);                   /* do it ourselves: group commit still */
      continue;
    }
    pthread_cond_signal (&rl->syncer_cv);
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  }
  rl->flush_waiters--;
  if (rl->failed) {
    errno = EIO;
    r = -1;
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

/* ---- workers ----------------------------------------------------------------- */

uint64_t
replog_wait_work (struct replog *rl, uint64_t after, unsigned timeout_ms)
{
  uint64_t d;

  pthread_mutex_lock (&rl->lock);
  if (rl->durable_seq <= after && !rl->stopping && !rl->failed && timeout_ms) {
    uint64_t until = now_ns (CLOCK_REALTIME) + (uint64_t) timeout_ms * 1000000u;
    struct timespec ts = { .tv_sec = (time_t) (until / 1000000000u),
                           .tv_nsec = (long) (until % 1000000000u) };
    pthread_cond_timedwait (&rl->work_cv, &rl->lock, &ts);
  }
  d = rl->durable_seq;
  pthread_mutex_unlock (&rl->lock);
  return d;
}

void
replog_post_applied (struct replog *rl, unsigned site, uint64_t seq)
{
  pthread_mutex_lock (&rl->lock);
  if (seq > rl->pending_applied[site] && rl->hdr.sites[site].mode == RL_MODE_LOG &&
      !(rl->pending_dirty & (1u << site))) {
    rl->pending_applied[site] = seq;
    pthread_cond_signal (&rl->syncer_cv);
  }
  pthread_mutex_unlock (&rl->lock);
}

/* What a header waiter waits for, checked under the lock. */
enum hdr_goal { HDR_APPLIED, HDR_DIRTY, HDR_SITE_FLAGS, HDR_RESUMED, HDR_DEV_FLAGS };

/* The goal of a flag change, for wait_header: the changed bits << 8 | their new values. */
static uint64_t
flags_goal (uint8_t set, uint8_t clear)
{
  return ((uint64_t) (set | clear) << 8) | (uint8_t) (set & ~clear);
}

static bool
hdr_reached (struct replog *rl, enum hdr_goal g, unsigned site, uint64_t arg)
{
  const struct rl_site_rec *s = &rl->hdr.sites[site];
  switch (g) {
  case HDR_APPLIED:              /* (a site leaving log mode never gets there) */
    return s->applied >= arg || s->mode != RL_MODE_LOG || (rl->pending_dirty & (1u << site));
  case HDR_DIRTY:
    return s->mode == RL_MODE_DIRTY;
  case HDR_SITE_FLAGS:           /* arg: flags_goal () */
    return (s->flags & (arg >> 8)) == (arg & 0xff);
  case HDR_RESUMED:
    return !(rl->pending_resume & (1u << site));
  case HDR_DEV_FLAGS:            /* site = device; arg: flags_goal () */
    return (rl->hdr.devices[site].flags & (arg >> 8)) == (arg & 0xff);
  }
  return true;
}

/* Wait until a durable header reaches the goal (the syncer writes it at
 * once: applied_waiters makes it urgent).  -1/EIO if the log failed. */
static int
wait_header (struct replog *rl, enum hdr_goal g, unsigned site, uint64_t arg)
{
  int r = 0;

  rl->applied_waiters++;
  pthread_cond_signal (&rl->syncer_cv);
  while (!hdr_reached (rl, g, site, arg) && !rl->failed)
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  rl->applied_waiters--;
  if (rl->failed) {
    errno = EIO;
    r = -1;
  }
  return r;
}

int
replog_wait_applied (struct replog *rl, unsigned site, uint64_t seq)
{
  int r;
  pthread_mutex_lock (&rl->lock);
  r = wait_header (rl, HDR_APPLIED, site, seq);
  pthread_mutex_unlock (&rl->lock);
  return r;
}

uint64_t
replog_applied (struct replog *rl, unsigned site)
{
  uint64_t a;
  pthread_mutex_lock (&rl->lock);
  a = rl->hdr.sites[site].applied;
  pthread_mutex_unlock (&rl->lock);
  return a;
}

bool
replog_space_wanted (struct replog *rl)
{
  bool w;
  pthread_mutex_lock (&rl->lock);
  w = rl->space_waiters > 0 || rl->stopping;
  pthread_mutex_unlock (&rl->lock);
  return w;
}

void
replog_get_stats (struct replog *rl, struct replog_stats *st)
{
  pthread_mutex_lock (&rl->lock);
  st->next_seq = rl->next_seq;
  st->committed_seq = rl->committed_seq;
  st->durable_seq = rl->durable_seq;
  st->tail_seq = rl->tail_seq;
  st->ndesc = rl->ndesc;
  st->data_blocks = rl->data_blocks;
  st->data_used_blocks = rl->data_head -
    (rl->tail_seq < rl->next_seq ? rl->slot_pos[slot_of (rl, rl->tail_seq)] : rl->data_head);
  st->epoch = rl->epoch;
  st->syncs = rl->syncs;
  st->header_writes = rl->header_writes;
  st->space_waits = rl->space_waits;
  st->size = rl->hdr.log_size;
  st->failed = rl->failed;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_get_header (struct replog *rl, struct rl_header *h)
{
  pthread_mutex_lock (&rl->lock);
  *h = rl->hdr;
  pthread_mutex_unlock (&rl->lock);
}

/* ---- site modes ------------------------------------------------------------- */

void
replog_set_release_fn (struct replog *rl, replog_release_fn fn, void *opaque)
{
  pthread_mutex_lock (&rl->lock);
  rl->release_fn = fn;
  rl->release_opaque = opaque;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_add_waker (struct replog *rl, int fd)
{
  pthread_mutex_lock (&rl->lock);
  if (rl->nwakers < RL_MAX_SITES)
    rl->wakers[rl->nwakers++] = fd;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_remove_waker (struct replog *rl, int fd)
{
  unsigned i;
  pthread_mutex_lock (&rl->lock);
  for (i = 0; i < rl->nwakers; i++)
    if (rl->wakers[i] == fd) {
      rl->wakers[i] = rl->wakers[--rl->nwakers];
      break;
    }
  pthread_mutex_unlock (&rl->lock);
}

int
replog_site_mode (struct replog *rl, unsigned site)
{
  int m;
  pthread_mutex_lock (&rl->lock);
  m = rl->hdr.sites[site].mode;
  pthread_mutex_unlock (&rl->lock);
  return m;
}

int
replog_set_site_dirty (struct replog *rl, unsigned site)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  if (rl->hdr.sites[site].mode != RL_MODE_DIRTY) {
    rl->pending_dirty |= 1u << site;
    if (rl->syncer_running)              /* else: the syncer's first round */
      r = wait_header (rl, HDR_DIRTY, site, 0);
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

uint8_t
replog_site_flags (struct replog *rl, unsigned site)
{
  uint8_t f;
  pthread_mutex_lock (&rl->lock);
  f = rl->hdr.sites[site].flags;
  pthread_mutex_unlock (&rl->lock);
  return f;
}

bool
replog_site_holds_full_log (struct replog *rl, unsigned site)
{
  bool r;
  pthread_mutex_lock (&rl->lock);
  r = rl->space_waiters > 0 && rl->hdr.sites[site].mode == RL_MODE_LOG &&
      rl->hdr.sites[site].applied + 1 <= rl->tail_seq;
  pthread_mutex_unlock (&rl->lock);
  return r;
}

int
replog_change_site_flags (struct replog *rl, unsigned site, uint8_t set, uint8_t clear)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  rl->pending_clear[site] = (uint8_t) ((rl->pending_clear[site] & ~set) | clear);
  rl->pending_flags[site] = (uint8_t) ((rl->pending_flags[site] & ~clear) | set);
  if (rl->syncer_running)
    r = wait_header (rl, HDR_SITE_FLAGS, site, flags_goal (set, clear));
  pthread_mutex_unlock (&rl->lock);
  return r;
}

int
replog_site_resume (struct replog *rl, unsigned site, replog_release_fn mark, void *opaque,
                    uint64_t *start)
{
  const struct rl_site_rec *s = &rl->hdr.sites[site];
  uint64_t seq, from;
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  if (rl->failed) {
    pthread_mutex_unlock (&rl->lock);
    errno = EIO;
    return -1;
  }
  if (s->mode == RL_MODE_LOG && !(rl->pending_dirty & (1u << site))) {
    *start = s->applied + 1;             /* in log mode already */
    pthread_mutex_unlock (&rl->lock);
    return 0;
  }
  /* Entries still in the log that the site lacks: from now on they are
   * its dirty logs' to cover; everything from `start` on comes from the
   * log, in order. */
  *start = rl->next_seq;
  from = rl->tail_seq > s->applied ? rl->tail_seq : s->applied + 1;
  for (seq = from; seq < rl->next_seq; seq++) {
    const struct rl_desc *d = desc_at (rl, seq);
    if (d->seq == seq && d->op != RL_OP_BARRIER)
      mark (opaque, 1u << site, d);
  }
  rl->resume_applied[site] = rl->next_seq - 1;
  rl->pending_resume |= 1u << site;
  rl->pending_dirty &= ~(1u << site);    /* everything after applied is marked */
  rl->pending_clear[site] &= (uint8_t) ~RL_SITE_RESYNC;
  if (rl->syncer_running)
    r = wait_header (rl, HDR_RESUMED, site, 0);
  if (r == 0 && s->mode != RL_MODE_LOG) {
    errno = EAGAIN;                      /* overtaken by a move to dirty-log mode */
    r = -1;
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

void
replog_set_dirtylog_sync (struct replog *rl, uint32_t (*fn) (void *), void *opaque)
{
  pthread_mutex_lock (&rl->lock);
  rl->dl_sync_fn = fn;
  rl->dl_sync_opaque = opaque;
  pthread_mutex_unlock (&rl->lock);
}

uint8_t
replog_dev_flags (struct replog *rl, unsigned dev)
{
  uint8_t f;
  pthread_mutex_lock (&rl->lock);
  f = dev < RL_MAX_DEVICES ? rl->hdr.devices[dev].flags : 0;
  pthread_mutex_unlock (&rl->lock);
  return f;
}

int
replog_change_dev_flags (struct replog *rl, unsigned dev, uint8_t set, uint8_t clear)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  rl->pending_dev_clear[dev] = (uint8_t) ((rl->pending_dev_clear[dev] & ~set) | clear);
  rl->pending_dev_set[dev] = (uint8_t) ((rl->pending_dev_set[dev] & ~clear) | set);
  if (rl->syncer_running)
    r = wait_header (rl, HDR_DEV_FLAGS, dev, flags_goal (set, clear));
  pthread_mutex_unlock (&rl->lock);
  return r;
}

void
replog_set_only_copy_wait (struct replog *rl, uint64_t ms)
{
  pthread_mutex_lock (&rl->lock);
  rl->only_copy_wait_ns = ms * 1000000u;
  pthread_cond_broadcast (&rl->space_cv);     /* waiters re-check */
  pthread_mutex_unlock (&rl->lock);
}
