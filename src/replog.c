/* replog.c: the replication log's format, and its create, open and recovery.
 *
 * Owns: the on-disk format (described below and in replog-format.h), the
 * checks a header copy and an entry must pass, creating a log, opening one
 * (both header copies read, the newest valid one used, entries recovered,
 * the identity checked against the configuration, free descriptor slots
 * scrubbed, the header rewritten, the ring mapped), writing one header
 * copy, the tail a header allows, and freeing a log.
 * Invariants: those of the format below; a log is shared with other
 * threads only once replog_open has returned it.
 * May call: utilities (crc32c, io, pftrace, report); cfg.h only for enum
 * cfg_log_mode.  Nothing of replog-ring.c (the ring's run-time path,
 * which calls the internals replog-int.h declares: calls go one way,
 * ring -> this file).
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
 *     durable header has every log-mode site's applied past it (safety rule 2).
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
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/magic.h>

#include "cfg.h"
#include "crc32c.h"
#include "io.h"
#include "pftrace.h"
#include "replog.h"
#include "replog-int.h"
#include "report.h"

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

/* fdatasync, in the power-loss trace (replog-int.h). */
int
rl_sync (int fd)
{
  pft_sync (fd, 'S');
  if (fdatasync (fd) == -1)
    return -1;
  pft_sync (fd, 'D');
  return 0;
}

/* Write header h as generation + 1 to its copy, no sync (replog-int.h). */
int
rl_header_write (struct replog *rl, struct rl_header *h)
{
  h->generation++;
  h->crc = header_crc (h);
  return io_pwrite_full (rl->fd, h, sizeof *h, rl->base + (h->generation & 1) * RL_HEADER_SIZE);
}

/* ---- create, recover ---------------------------------------------------------- */

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
    salt = wall_ns () ^ ((uint64_t) getpid () << 32);
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
  if (rl_header_write (rl, h) == -1 || rl_header_write (rl, h) == -1 || rl_sync (fd) == -1) {
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

/* ---- identity: the configuration against the header (safety rule 7) ---------- */

/* Which devices still have entries in the log (used[i]). */
static int
devices_in_use (struct replog *rl, const struct replog_recovery *rec, bool *used)
{
  uint64_t seq;

  for (seq = rec->first_seq; seq - rec->first_seq < rec->entries; seq++) {
    struct rl_desc d;
    if (io_pread_full (rl->fd, &d, sizeof d,
                       rl->base + rl->hdr.desc_offset + slot_of (rl, seq) * RL_DESC_SIZE,
                       false) == -1) {
      rep_error ("replog %s: %m", rl->path);
      return -1;
    }
    if (d.op != RL_OP_BARRIER)
      used[d.device] = true;
  }
  return 0;
}

/* A device with entries in the log keeps its slot, name, size and block
 * size in the configuration. */
static int
check_devices_kept (struct replog *rl, const struct replog_open_args *a, const bool *used)
{
  unsigned i;

  for (i = 0; i < RL_MAX_DEVICES; i++) {
    const struct rl_dev_rec *r = &rl->hdr.devices[i];
    if (!used[i])
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
  return 0;
}

/* A log-mode site that still needs entries stays in the configuration. */
static int
check_sites_kept (struct replog *rl, const struct replog_open_args *a,
                  const struct replog_recovery *rec)
{
  unsigned i;

  for (i = 0; i < RL_MAX_SITES; i++) {
    const struct rl_site_rec *s = &rl->hdr.sites[i];
    bool want = a->sites & (1u << i);
    if (s->present && !want && s->mode == RL_MODE_LOG && rec->entries && s->applied < rec->last_seq) {
      rep_error ("replog %s: site %u still needs %" PRIu64 " entries of the log but the "
                 "configuration drops it", rl->path, i, rec->last_seq - s->applied);
      return -1;
    }
  }
  return 0;
}

/* The header's devices become the configured ones. */
static void
update_devices (struct rl_header *h, const struct replog_open_args *a)
{
  unsigned i;

  for (i = 0; i < RL_MAX_DEVICES; i++) {
    struct rl_dev_rec *r = &h->devices[i];
    /* A device's flags and UUID stay with it (same name, same slot). */
    bool same = i < a->ndevices && r->present && !strcmp (r->name, a->devices[i].name);
    uint8_t flags = same ? r->flags : 0;
    if (!same)
      memset (h->dev_uuid[i], 0, 16);
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
}

/* The header's sites become the configured ones.  A new site starts in
 * the log with the oldest entry still needed, so a leg trusted to equal
 * the local leg also gets what the local leg has not applied yet. */
static void
update_sites (struct replog *rl, const struct replog_open_args *a, struct replog_recovery *rec)
{
  struct rl_header *h = &rl->hdr;
  uint64_t start = rl->next_seq - 1;
  unsigned i;

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

static bool
uuid_zero (const uint8_t u[16])
{
  static const uint8_t z[16];
  return memcmp (u, z, 16) == 0;
}

/* The group's identity (leg labels): a header without one (a new log, or
 * one written before labels) takes the caller's; a device slot whose
 * device is new or renamed (update_devices cleared it) takes the caller's
 * device UUID.  rec->identity gets what the header holds. */
static int
update_group (struct rl_header *h, const struct replog_open_args *a, struct replog_recovery *rec)
{
  const struct replog_identity *id = a->identity;
  unsigned i;

  if (id && (uuid_zero (h->group) || h->gen == 0)) {
    if (id->refuse) {
      rep_error ("%s", id->refuse);
      return -1;
    }
    memcpy (h->group, id->group, 16);
    h->gen = id->gen;
    h->nhist = id->nhist <= RL_HIST ? id->nhist : RL_HIST;
    memcpy (h->hist, id->hist, sizeof h->hist);
    memset (h->dev_uuid, 0, sizeof h->dev_uuid);
    rec->identity_new = true;
  }
  for (i = 0; i < RL_MAX_DEVICES; i++) {
    if (!h->devices[i].present)
      memset (h->dev_uuid[i], 0, 16);
    else if (id && uuid_zero (h->dev_uuid[i])) {
      memcpy (h->dev_uuid[i], id->dev_uuid[i], 16);
      rec->new_dev_uuids |= 1u << i;
    }
  }
  memcpy (rec->identity.group, h->group, 16);
  rec->identity.gen = h->gen;
  rec->identity.nhist = h->nhist <= RL_HIST ? h->nhist : RL_HIST;
  memcpy (rec->identity.hist, h->hist, sizeof h->hist);
  memcpy (rec->identity.dev_uuid, h->dev_uuid, sizeof h->dev_uuid);
  return 0;
}

/* Check the configured identity against the header (safety rule 7) and
 * update the header to the configuration. */
static int
check_identity (struct replog *rl, const struct replog_open_args *a, struct replog_recovery *rec)
{
  bool used_dev[RL_MAX_DEVICES] = { false };

  if (devices_in_use (rl, rec, used_dev) == -1 ||
      check_devices_kept (rl, a, used_dev) == -1 ||
      check_sites_kept (rl, a, rec) == -1)
    return -1;
  update_devices (&rl->hdr, a);
  update_sites (rl, a, rec);
  if (update_group (&rl->hdr, a, rec) == -1)
    return -1;
  rl->hdr.clean = 0;
  return 0;
}

/* ---- the tail ----------------------------------------------------------------- */

/* The tail a header h allows: the oldest entry a log-mode site (or one
 * going back to log mode) still needs; *dirty gets the dirty-mode sites
 * (safety rule 2, above: space before it may be reused once durable headers say
 * so).  The run-time path applies it (recompute_tail in replog-ring.c),
 * open sets the first tail with it. */
uint64_t
rl_tail_of (struct replog *rl, const struct rl_header *h, uint32_t *dirty)
{
  uint64_t t = rl->next_seq;
  unsigned i;

  *dirty = 0;
  for (i = 0; i < RL_MAX_SITES; i++) {
    const struct rl_site_rec *s = &h->sites[i];
    if (s->present && (rl->pend.resume & (1u << i))) {
      if (rl->pend.resume_applied[i] + 1 < t)  /* returning: its entries are held already */
        t = rl->pend.resume_applied[i] + 1;
      continue;
    }
    if (s->present && s->mode == RL_MODE_LOG && s->applied + 1 < t)
      t = s->applied + 1;
    if (s->present && s->mode == RL_MODE_DIRTY)
      *dirty |= 1u << i;
  }
  return t;
}


/* ---- open ----------------------------------------------------------------------- */

/* Open and lock the log's file or device; *fsize, *is_blk: what it is.
 * The file descriptor, or -1 (reported). */
static int
open_log_file (const struct replog_open_args *a, struct replog_recovery *rec,
               uint64_t *fsize, bool *is_blk)
{
  struct statfs sfs;
  struct stat st;
  int fd, flags = O_RDWR | O_CLOEXEC;
  bool existed;

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
  if (fd_size (fd, fsize, is_blk) == -1) {
    rep_error ("replog %s: cannot get its size: %m", a->path);
    close (fd);
    return -1;
  }
  /* A block device's node lives on /dev's devtmpfs: only a file's own
   * filesystem says whether its flushes can be durable. */
  if (!*is_blk && fstatfs (fd, &sfs) == 0 &&
      (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC))
    rec->on_tmpfs = true;
  /* Safety rule 14: the log's name must survive a power loss before any
   * entry goes into it (or mode=auto would create a blank log over flushed
   * writes after one).  Synced at every open, not only at the creation: a
   * crash may have come between the creation and the sync. */
  if (!*is_blk) {
    if (!existed)
      pft_create (fd);
    if (io_sync_parent_dir (a->path) == -1) {
      rep_error ("replog %s: cannot sync its directory (so that its name survives a power "
                 "loss): %m; refusing to start", a->path);
      close (fd);
      return -1;
    }
  }
  return fd;
}

/* A new struct replog for fd (which it owns from here on, even on
 * failure), nothing read yet.  NULL if out of memory (reported). */
static struct replog *
new_replog (const struct replog_open_args *a, int fd)
{
  struct replog *rl;

  if (!(rl = calloc (1, sizeof *rl)) || !(rl->path = strdup (a->path))) {
    rep_error ("calloc: %m");
    free (rl);
    close (fd);
    return NULL;
  }
  rl->fd = fd;
  rl->base = a->offset;
  rl->commit_interval_ns = a->commit_interval_ms * 1000000u;
  pthread_mutex_init (&rl->lock, NULL);
  pthread_cond_init (&rl->space_cv, NULL);
  pthread_cond_init (&rl->durable_cv, NULL);
  pthread_cond_init (&rl->syncer_cv, NULL);
  pthread_cond_init (&rl->work_cv, NULL);
  return rl;
}

/* Read both header copies (pread, never through a mapping) into hc and
 * check them: why[i] is NULL for a valid copy; *blank if both are all
 * zero bytes. */
static int
read_header_copies (struct replog *rl, const struct replog_open_args *a, uint64_t fsize,
                    struct rl_header hc[2], const char *why[2], bool *blank)
{
  unsigned i;

  memset (hc, 0, 2 * sizeof hc[0]);
  *blank = true;
  for (i = 0; i < 2; i++) {
    if (fsize >= a->offset + (i + 1) * RL_HEADER_SIZE) {
      if (io_pread_full (rl->fd, &hc[i], RL_HEADER_SIZE, a->offset + i * RL_HEADER_SIZE,
                         false) == -1) {
        rep_error ("replog %s: reading header copy %c: %m", a->path, 'A' + i);
        return -1;
      }
    }
    if (!io_all_zero (&hc[i], RL_HEADER_SIZE))
      *blank = false;
    why[i] = replog_header_check (&hc[i], fsize > a->offset ? fsize - a->offset : 0);
    /* A copy is written with generation & 1 == its index (rl_header_write):
     * another parity is the other copy seen from a wrong offset, and
     * writing generation + 1 would overwrite it in place. */
    if (!why[i] && (hc[i].generation & 1) != i)
      why[i] = "generation does not belong to this copy (wrong offset?)";
  }
  return 0;
}

/* An existing log: use the newest valid header copy (HEADER VALIDITY above). */
static int
pick_header (struct replog *rl, const struct replog_open_args *a, const struct rl_header hc[2],
             const char *why[2], bool blank, bool is_blk, struct replog_recovery *rec)
{
  int use;

  if (why[0] && why[1]) {
    if (a->mode == LOG_MODE_OPEN && blank)
      rep_error ("replog %s: no log here (blank); use mode=create or auto", a->path);
    else
      rep_error ("replog %s: both header copies are invalid (A: %s; B: %s); "
                 "refusing to start (mode=create would reinitialise it and lose its entries)",
                 a->path, why[0], why[1]);
    return -1;
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
    off_t hole = lseek (rl->fd, (off_t) a->offset, SEEK_HOLE);
    if (hole != (off_t) -1 && (uint64_t) hole < a->offset + rl->hdr.log_size) {
      rep_error ("replog %s: the log file has a hole at byte %lld (it was not created by "
                 "us, or was truncated/sparsified); refusing to map it", a->path, (long long) hole);
      return -1;
    }
  }
  return 0;
}

/* rl->hdr: a new log's (created here), or an existing log's newest valid copy. */
static int
load_header (struct replog *rl, const struct replog_open_args *a, uint64_t fsize, bool is_blk,
             struct replog_recovery *rec)
{
  struct rl_header hc[2];
  const char *why[2];
  bool blank, create;

  if (read_header_copies (rl, a, fsize, hc, why, &blank) == -1)
    return -1;
  create = a->mode == LOG_MODE_CREATE;
  if (a->mode == LOG_MODE_AUTO && blank)
    create = true;
  if (create) {
    uint64_t size = a->size;
    if (is_blk && size > fsize - a->offset)
      size = fsize - a->offset;
    if (is_blk && size == 0) {
      rep_error ("replog %s: offset is beyond the end of the device", a->path);
      return -1;
    }
    if (create_log (rl, rl->fd, size, a) == -1)
      return -1;
    rec->created = true;
  }
  else if (pick_header (rl, a, hc, why, blank, is_blk, rec) == -1)
    return -1;
  rec->generation = rl->hdr.generation;
  return 0;
}

/* Recover the entries (RECOVERY above), check and update the identity,
 * scrub the free slots, write the header to both copies, set the tail. */
static int
load_entries (struct replog *rl, const struct replog_open_args *a, struct replog_recovery *rec)
{
  uint32_t dirty;
  uint64_t t;
  unsigned i;

  rl->salt = rl->hdr.salt;
  rl->ndesc = rl->hdr.ndesc;
  rl->data_blocks = rl->hdr.data_blocks;
  rl->slot_committed = calloc (rl->ndesc, 1);
  rl->slot_pos = calloc (rl->ndesc, sizeof *rl->slot_pos);
  rl->slot_crc = calloc (rl->ndesc, sizeof *rl->slot_crc);
  if (!rl->slot_committed || !rl->slot_pos || !rl->slot_crc) {
    rep_error ("calloc: %m");
    return -1;
  }
  if (recover (rl, rec) == -1)
    return -1;
  if (check_identity (rl, a, rec) == -1)
    return -1;
  if (scrub_free_slots (rl) == -1) {
    rep_error ("replog %s: clearing free descriptor slots: %m", a->path);
    return -1;
  }
  /* Both copies, one after the other: the copy recovery falls back to
   * must know the devices and sites too (and a damaged copy is rewritten). */
  if (rl_header_write (rl, &rl->hdr) == -1 || rl_sync (rl->fd) == -1 ||
      rl_header_write (rl, &rl->hdr) == -1 || rl_sync (rl->fd) == -1) {
    rep_error ("replog %s: writing the header: %m", a->path);
    return -1;
  }
  rl->hdr_old = rl->hdr;
  for (i = 0; i < RL_MAX_SITES; i++)
    rl->pend.applied[i] = rl->hdr.sites[i].applied;
  /* The tail the header allows (both copies are the same now; no site is
   * returning to log mode and no release function is registered yet, so
   * no entry leaving the log is to be recorded). */
  t = rl_tail_of (rl, &rl->hdr, &dirty);
  if (t > rl->tail_seq)
    rl->tail_seq = t;
  return 0;
}

/* Map the rings: descriptors are stored through the mapping, payloads
 * are read through it (and written with pwritev, replog_fill). */
static int
map_log (struct replog *rl)
{
  rl->map_len = rl->hdr.log_size - rl->hdr.desc_offset;
  rl->map = mmap (NULL, rl->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, rl->fd,
                  (off_t) (rl->base + rl->hdr.desc_offset));
  if (rl->map == MAP_FAILED) {
    rl->map = NULL;
    rep_error ("replog %s: mmap: %m", rl->path);
    return -1;
  }
  rl->desc_ring = rl->map;
  rl->data_ring = rl->map + (rl->hdr.data_offset - rl->hdr.desc_offset);
  rl->data_file_off = rl->base + rl->hdr.data_offset;
  return 0;
}

int
replog_open (const struct replog_open_args *a, struct replog **rlp, struct replog_recovery *rec)
{
  struct replog *rl;
  uint64_t fsize;
  bool is_blk = false;
  int fd;

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
  if ((fd = open_log_file (a, rec, &fsize, &is_blk)) == -1)
    return -1;
  if (!(rl = new_replog (a, fd)))
    return -1;
  if (load_header (rl, a, fsize, is_blk, rec) == -1 ||
      load_entries (rl, a, rec) == -1 ||
      map_log (rl) == -1) {
    rl_free (rl);
    return -1;
  }
  *rlp = rl;
  return 0;
}

/* The syncer is not running (never started, or replog_stop joined it). */
void
rl_free (struct replog *rl)
{
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
