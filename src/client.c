/* client.c: the client I/O path (layer 5): what the plugin calls for each
 * NBD request.
 *
 * A write is split into entries of at most max_request bytes, each
 * reserved in the log, written into it, indexed in the device's overlay
 * and committed; then it is acknowledged, once the policies allow (a sync
 * site, or one over its fall_behind threshold, holds the client until its
 * legs hold the entry: site.c's site_wait_done; a sync site with a
 * sync_deadline at most that long after the request was logged, then it is
 * behind and treated as async until it has caught up).  A flush or FUA write
 * appends an epoch barrier and waits until the log is durable up to it.
 * A read is a read of the device view (view.c).
 * Invariants: an entry is in the overlay and its write generations are
 * bumped before it is committed (before any site can apply it); a reserved
 * entry is always committed, even when filling it failed; an unaligned
 * write holds d->rmw_lock for writing from its read to its entry; a
 * write, write-zeroes or trim checks for a switchover (read_only) under
 * d->rmw_lock and logs nothing once one began: it fails with EROFS (a
 * switchover takes every rmw_lock for writing after setting the state, so
 * no writer is between its check and its log entry then).
 * Calls down only: the view, the site state machine, the log.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "replicator.h"
#include "report.h"
#include "units.h"

static int
check_range (struct vdev *d, uint64_t count, uint64_t offset, const char *what)
{
  if (offset > d->size || count > d->size - offset) {
    errno = ENOSPC;
    rep_error ("device '%s': %s beyond the end (offset %" PRIu64 ", %" PRIu64 " bytes, size %" PRIu64 ")",
               d->name, what, offset, count, d->size);
    return -1;
  }
  return 0;
}

/* A switchover began (admin.c): writes fail with EROFS, not held (the
 * drain must not wait for them, and a client must not hang).  Called with
 * d->rmw_lock held. */
static int
read_only (struct vdev *d, const char *what)
{
  if (__atomic_load_n (&d->r->handover.state, __ATOMIC_ACQUIRE) == HO_NONE)
    return 0;
  rep_debug ("device '%s': %s refused: the instance is read-only (switchover)", d->name, what);
  errno = EROFS;
  return -1;
}

/* The policies (docs/RULES.md, policies), after the entries up to seq are
 * logged (at logged_ns, mono_ns): a sync site, or an async one over its
 * fall_behind threshold, holds the client until it has seq (bounded by its
 * disconnect_timeout, and a sync site's by its sync_deadline from
 * logged_ns).  A sync site behind its sync_deadline counts as async. */
static int
apply_policies (struct replicator *r, uint64_t seq, uint64_t logged_ns, const char *what)
{
  bool durable = false;
  unsigned i;

  if (!seq)
    return 0;
  for (i = 0; i < CFG_MAX_SITES; i++) {
    struct site *s = &r->sites[i];
    bool fb;
    if (!s->cfg || !s->running)
      continue;
    fb = __atomic_load_n (&s->policy, __ATOMIC_RELAXED) != POLICY_SYNC || site_sync_behind (s);
    if (fb && (__atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) == FB_NONE || !site_over_threshold (s, seq)))
      continue;
    if (i && !site_state_holds_clients (site_state (s)))
      continue;
    if (!durable) {
      /* Entries ship only once durable: make it durable now (group
       * commit) rather than after the background interval; within a sync
       * site's deadline (not durable by then: it missed it). */
      uint64_t until = site_sync_deadline_ns (s, fb, logged_ns);
      int rc = until ? replog_wait_durable_until (r->rl, seq, until) : replog_wait_durable (r->rl, seq);
      if (rc == -1) {
        rep_error ("%s: the log could not be made durable: %m", what);
        errno = EIO;
        return -1;
      }
      if (rc == 1) {
        site_sync_missed (s, seq);
        continue;
      }
      durable = true;
    }
    site_wait_done (s, seq, fb, logged_ns);
  }
  return 0;
}

/* After the entries are logged: FUA makes them durable, then the policies. */
static int
finish_write (struct vdev *d, uint64_t last_seq, bool fua)
{
  struct replicator *r = d->r;
  uint64_t logged_ns = mono_ns ();      /* a sync_deadline counts from here */

  if (fua) {
    uint64_t s;
    if (replog_barrier (r->rl, RL_FLAG_FUA, &s) == -1 || replog_wait_durable (r->rl, s) == -1) {
      rep_error ("device '%s': FUA: the log could not be made durable: %m", d->name);
      errno = EIO;
      return -1;
    }
    if (s > last_seq)
      last_seq = s;              /* a sync site must have flushed it too */
  }
  return apply_policies (r, last_seq, logged_ns, d->name);
}

/* Log one aligned write chunk. */
static int
log_write (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, uint64_t *seq)
{
  void *payload;
  int r;

  if (replog_reserve (d->r->rl, d->index, RL_OP_WRITE, 0, offset, count, seq, &payload) == -1) {
    rep_error ("device '%s': write: the log refused the entry: %m", d->name);
    return -1;
  }
  if (replog_fill (d->r->rl, *seq, buf) == -1) {
    int e = errno;
    rep_error ("device '%s': write: copying into the log: %m", d->name);
    replog_commit (d->r->rl, *seq);      /* the failed log never ships it */
    errno = e;
    return -1;
  }
  pthread_mutex_lock (&d->ov_lock);
  r = overlay_insert (d->ov, offset, offset + count, *seq, OV_DATA, payload);
  pthread_mutex_unlock (&d->ov_lock);
  vdev_wgen_bump (d, offset, count);
  __atomic_add_fetch (&d->r->bytes_logged, count, __ATOMIC_RELAXED);
  /* Committed whatever happened: a reserved entry must not block the log. */
  replog_commit (d->r->rl, *seq);
  if (r == -1) {
    rep_error ("device '%s': write: indexing the entry: %m", d->name);
    return -1;
  }
  return 0;
}

/* A write not aligned to the block size: read the surrounding blocks
 * (device view), patch, and log the aligned span.  One at a time, and no
 * other write of the device in between (safety rule 11). */
static int
rmw_write (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, uint64_t *seq)
{
  uint64_t bs = d->block_size;
  uint64_t s = offset & ~(bs - 1), e = (offset + count + bs - 1) & ~(bs - 1);
  uint8_t *tmp = malloc ((size_t) (e - s));
  int r = -1;

  if (!tmp) {
    rep_error ("malloc: %m");
    return -1;
  }
  pthread_rwlock_wrlock (&d->rmw_lock);
  if (read_only (d, "write") == 0 && rdev_pread (d, tmp, (uint32_t) (e - s), s) == 0) {
    memcpy (tmp + (offset - s), buf, count);
    r = log_write (d, tmp, (uint32_t) (e - s), s, seq);
  }
  pthread_rwlock_unlock (&d->rmw_lock);
  free (tmp);
  return r;
}

int
rdev_pwrite (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, bool fua)
{
  const uint8_t *p = buf;
  uint64_t seq = 0;

  if (check_range (d, count, offset, "write") == -1)
    return -1;
  if ((offset | count) & (d->block_size - 1)) {
    if (rmw_write (d, buf, count, offset, &seq) == -1)
      return -1;
  }
  else {
    pthread_rwlock_rdlock (&d->rmw_lock);
    if (read_only (d, "write") == -1) {
      pthread_rwlock_unlock (&d->rmw_lock);
      return -1;
    }
    while (count) {
      uint32_t n = count > d->max_request ? d->max_request : count;
      if (log_write (d, p, n, offset, &seq) == -1) {
        pthread_rwlock_unlock (&d->rmw_lock);
        return -1;
      }
      p += n;
      offset += n;
      count -= n;
    }
    pthread_rwlock_unlock (&d->rmw_lock);
  }
  __atomic_add_fetch (&d->counters.writes, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->counters.bytes_written, (uint64_t) (p - (const uint8_t *) buf), __ATOMIC_RELAXED);
  return finish_write (d, seq, fua);
}

/* Write-zeroes and trim: logged as operations without payload; both read
 * back as zeroes (safety rule 10). */
static int
log_zero_op (struct vdev *d, int op, int flags, uint32_t count, uint64_t offset, bool fua)
{
  uint64_t seq;
  int r;

  if (check_range (d, count, offset, op == RL_OP_TRIM ? "trim" : "zero") == -1)
    return -1;
  if (count == 0)
    return finish_write (d, 0, fua);
  if ((offset | count) & (d->block_size - 1)) {
    /* Unaligned head or tail: zero the partial blocks by writing. */
    uint64_t bs = d->block_size;
    uint64_t as = (offset + bs - 1) & ~(bs - 1), ae = (offset + count) & ~(bs - 1);
    uint8_t *z;
    if (as >= ae) {
      if (!(z = calloc (1, count)))
        return -1;
      r = rdev_pwrite (d, z, count, offset, false);
      free (z);
      return r == -1 ? -1 : finish_write (d, 0, fua);
    }
    if (!(z = calloc (1, bs)))
      return -1;
    r = 0;
    if (as > offset)
      r = rdev_pwrite (d, z, (uint32_t) (as - offset), offset, false);
    if (r == 0 && offset + count > ae)
      r = rdev_pwrite (d, z, (uint32_t) (offset + count - ae), ae, false);
    free (z);
    if (r == -1)
      return -1;
    count = (uint32_t) (ae - as);
    offset = as;
  }
  pthread_rwlock_rdlock (&d->rmw_lock);
  if (read_only (d, op == RL_OP_TRIM ? "trim" : "write-zeroes") == -1) {
    pthread_rwlock_unlock (&d->rmw_lock);
    return -1;
  }
  if (replog_reserve (d->r->rl, d->index, op, flags, offset, count, &seq, NULL) == -1) {
    pthread_rwlock_unlock (&d->rmw_lock);
    rep_error ("device '%s': the log refused the entry: %m", d->name);
    return -1;
  }
  pthread_mutex_lock (&d->ov_lock);
  r = overlay_insert (d->ov, offset, offset + count, seq, OV_ZERO, NULL);
  pthread_mutex_unlock (&d->ov_lock);
  vdev_wgen_bump (d, offset, count);
  pthread_rwlock_unlock (&d->rmw_lock);
  replog_commit (d->r->rl, seq);
  if (r == -1) {
    rep_error ("device '%s': indexing the entry: %m", d->name);
    return -1;
  }
  return finish_write (d, seq, fua);
}

int
rdev_zero (struct vdev *d, uint32_t count, uint64_t offset, bool may_trim, bool fua)
{
  __atomic_add_fetch (&d->counters.zeroes, 1, __ATOMIC_RELAXED);
  return log_zero_op (d, RL_OP_ZERO, may_trim ? RL_FLAG_MAY_TRIM : 0, count, offset, fua);
}

int
rdev_trim (struct vdev *d, uint32_t count, uint64_t offset, bool fua)
{
  __atomic_add_fetch (&d->counters.trims, 1, __ATOMIC_RELAXED);
  return log_zero_op (d, RL_OP_TRIM, 0, count, offset, fua);
}

int
rdev_flush (struct replicator *r)
{
  uint64_t s, logged_ns = mono_ns ();

  if (replog_barrier (r->rl, 0, &s) == -1 || replog_wait_durable (r->rl, s) == -1) {
    rep_error ("flush: the log could not be made durable: %m");
    errno = EIO;
    return -1;
  }
  return apply_policies (r, s, logged_ns, "flush");
}

int
rdev_pread (struct vdev *d, void *buf, uint32_t count, uint64_t offset)
{
  int r = rdev_read_view (d, buf, count, offset);
  __atomic_add_fetch (&d->counters.reads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->counters.bytes_read, count, __ATOMIC_RELAXED);
  return r;
}

