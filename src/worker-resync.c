/* worker-resync.c: resync, the worker side.
 *
 * A dirty-mode site whose links are up goes back to log mode at an exact
 * point of the log's append order (replog_site_resume): entries from
 * rs.start on reach it from the log, in order, as usual; everything it
 * missed before is in its legs' dirty logs (released entries, plus the
 * entries still in the log, marked at the switch).  Those regions are
 * copied from the device view (local leg + unapplied entries) while the
 * log keeps flowing:
 *   - copies start once every entry before rs.start is durable (so the
 *     device view has them all);
 *   - a copy and a log write never overlap on a leg: log entries wait for
 *     a copy of their range, a copy waits for log writes in flight there
 *     (safety rule 6: a copy never overwrites newer data);
 *   - the data read may contain entries up to hold_seq (the newest
 *     reserved when it was read): the copy goes out only once the log is
 *     durable that far (safety rule 3), and the leg is a consistent prefix again
 *     only once the log has been applied there up to every copy's
 *     hold_seq (rs.high);
 *   - a region's bit is cleared when its copy completed; holes of the
 *     device (no unapplied entry, no data in the local leg file) go as
 *     write-zeroes, many regions at once;
 *   - done: no bit left, no copy in flight, applied >= rs.high, then a
 *     flush of the legs, then the header drops RL_SITE_RESYNC.
 * If the site falls back to dirty mode meanwhile (pull-ahead), copies in
 * flight are forgotten (their bits are still set) and the next try waits
 * longer each time.
 *
 * At site 0 the same machinery restores a local leg (worker-local.c marks
 * it LEG_RESYNCING with every bit set; restore_finish hands it back).
 *
 * Owns: the resync state of struct worker (w->rs, the copy slots
 * qd..nio-1 of w->io and their buffers w->cp, the list of copies
 * completed since the last checkpoint w->cc.clr), the site's resyncing
 * flag and resync_* counters, RL_SITE_RESYNC in the header.
 * Invariants: as above (rules 3 and 6); a region's dirty bit is cleared
 * only by the checkpoint that covers its copy (worker-ckpt.c).
 * May call: worker-apply.c (io_issue), worker-ckpt.c (ckpt_start),
 * worker-remote.c (links_all_up), worker-local.c (restore_finish),
 * worker-int.h helpers, the device view (rdev_*), replog/bitmap functions.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "event.h"
#include "replicator.h"
#include "report.h"
#include "leg-label.h"
#include "worker-int.h"

/* A leg a resync copies to: at site 0 only a local leg being restored
 * (another one may be out of service, its bitmap filling up). */
static bool
resyncable (const struct leg *l)
{
  return l->site != 0 || __atomic_load_n (&l->state, __ATOMIC_RELAXED) == LEG_RESYNCING;
}

static void
resync_mark (void *opaque, uint32_t sites, const struct rl_desc *d)
{
  struct worker *w = opaque;
  struct leg *l;
  (void) sites;
  if (d->device < w->r->ndevs && (l = w->leg_of_dev[d->device]) && l->dirty_log)
    bitmap_set_range (l->dirty_log, d->offset, d->length);
}

void
resync_free_buffers (struct worker *w)
{
  unsigned i;
  for (i = 0; i < RESYNC_QD; i++) {
    free (w->cp.buf[i]);
    free (w->cp.rbuf[i]);
    w->cp.buf[i] = w->cp.rbuf[i] = NULL;
  }
}

/* The regions a resync copies (in-doubt ones past their grace period,
 * every region of a leg without a dirty log) and the copy buffers, as
 * large as the largest region.  -1: out of memory (retried later). */
static int
resync_prepare (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint64_t region = RESYNC_CHUNK;
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    /* In-doubt regions are copied too, once writes of the aborted
     * connection can no longer land (else at the end, see resync_step). */
    if (l->doubt && since (now, l->link.down_since_ns) > DOUBT_GRACE_NS) {
      bitmap_merge (l->dirty_log, l->doubt);
      l->doubt_pending = false;
    }
    if (l->cfg->dirty_log.type == DIRTYLOG_NOLOG)
      bitmap_set_all (l->dirty_log);     /* no record: everything is copied */
    if (l->dirty_log->region_size > region)
      region = l->dirty_log->region_size;
  }
  w->cp.size = region;
  for (i = 0; i < RESYNC_QD; i++)
    if ((!w->cp.buf[i] && posix_memalign ((void **) &w->cp.buf[i], 4096, (size_t) w->cp.size) != 0) ||
        (!w->cp.rbuf[i] && posix_memalign ((void **) &w->cp.rbuf[i], 4096, (size_t) w->cp.size) != 0)) {
      /* Whichever failed is left NULL (freed below with the others; the
       * one that succeeded is not leaked). */
      rep_error ("site %u: resync: out of memory", s->id);
      resync_free_buffers (w);
      w->rs.retry_at = now + RESYNC_RETRY_MAX;
      return -1;
    }
  return 0;
}

/* The site is fed from the log again from *start on: back from dirty-log
 * mode at an exact point of the log (replog_site_resume), or in place
 * (already in log mode).  -1: the header could not say so (retried
 * later). */
static int
resync_switch (struct worker *w, uint64_t now, uint64_t *start)
{
  struct site *s = w->site;

  if (!site_state_is_dirty_log (site_state (s))) {
    /* In log mode already (in-doubt regions, a full resync, a restart):
     * the header says so before anything is copied, so that a restart
     * does not take the site for consistent. */
    *start = w->next;
    if (s->id && !(replog_site_flags (w->r->rl, s->id) & RL_SITE_RESYNC) &&
        replog_change_site_flags (w->r->rl, s->id, RL_SITE_RESYNC, 0) == -1) {
      rep_error ("site %u: resync: could not record it in the log header: %m", s->id);
      w->rs.retry_at = now + RESYNC_RETRY_MAX;
      return -1;
    }
  }
  else if (replog_site_resume (w->r->rl, s->id, resync_mark, w, start) == -1) {
    rep_error ("site %u: resync: could not switch the site back to log mode: %m", s->id);
    w->rs.retry_at = now + RESYNC_RETRY_MAX;
    return -1;
  }
  else {
    memset (w->cdone, 0, w->ndesc);
    w->next = *start;
    w->done = w->posted = w->rw.done_hwm = *start - 1;
    w->ck.last_ns = now;
    /* Fed from start on: the entries before it are the copies' to bring
     * (go_dirty forgot what was in flight), so the legs count as holding
     * start - 1.  In place, done_seq stays as publish_done keeps it: the
     * entries in flight (done < seq < next) are not on the legs yet and
     * the clients of a sync site wait for them (docs/RULES.md, policies). */
    publish_done (w);
  }
  return 0;
}

/* A remote site's legs say on their labels that a copy onto them is under
 * way (mixed states: never to be taken over as they are), and when it is
 * done, the consistent point.  A remote leg's label goes through the
 * label thread (its reader connection): no copy onto the leg starts
 * before that write is done (copy_start). */
static void
resync_labels (struct worker *w, bool done, uint64_t cons_ns)
{
  unsigned i;

  if (w->site->id == 0 || (!done && w->rs.doubt_only))
    return;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    bool marked;
    if (l->lb.where == LABEL_NONE || (l->remote && !l->link.up))
      continue;
    pthread_mutex_lock (&l->lb.lock);
    marked = l->lb.have && (l->lb.cur.flags & (LBL_NEW | LBL_RESYNC));
    pthread_mutex_unlock (&l->lb.lock);
    if (!done && marked)
      continue;
    if (l->remote)                 /* the label thread; copies wait for it */
      leglabel_post (l, done ? LBL_CONSISTENT : LBL_RESYNC, done ? w->posted : 0, cons_ns, false);
    else
      leglabel_write (l, done ? LBL_CONSISTENT : LBL_RESYNC, done ? w->posted : 0, cons_ns);
  }
}

void
resync_begin (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint64_t start, total = 0;
  bool from_dirty_log;
  unsigned i;

  if (resync_prepare (w, now) == -1 || resync_switch (w, now, &start) == -1)
    return;
  resync_labels (w, false, 0);
  w->rs.start = start;
  w->rs.high = start - 1;
  if (w->rs.restarted) {
    /* Copies made before the restart may hold entries up to the newest
     * one recovered (none was shipped beyond what was durable). */
    struct replog_stats st;
    replog_get_stats (w->r->rl, &st);
    w->rs.high = st.next_seq - 1;
    w->rs.restarted = false;
  }
  w->rs.flushing = false;
  ratelimit_init (&w->rs.limit, s->cfg->resync_rate,
                  ratelimit_burst_for (s->cfg->resync_rate, RESYNC_CHUNK), now);
  w->hl.last_progress_ns = now;
  for (i = 0; i < w->nlegs; i++) {
    w->rs.cursor[i] = 0;
    if (resyncable (w->legs[i]))
      total += bitmap_count (w->legs[i]->dirty_log);
  }
  pthread_mutex_lock (&s->lock);
  from_dirty_log = site_state_is_dirty_log (site_state (s));
  site_enter_resync_locked (s);
  __atomic_store_n (&s->resync.regions, total, __ATOMIC_RELAXED);
  s->resync.copied = 0;
  s->resync.bytes = s->resync.zero_bytes = 0;
  s->resync.started_ns = now;
  if (from_dirty_log)                    /* fed from the log again from start on */
    s->bytes_base = (int64_t) __atomic_load_n (&s->bytes_done, __ATOMIC_RELAXED) -
      (int64_t) __atomic_load_n (&w->r->bytes_logged, __ATOMIC_RELAXED);
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
  rep_event (EV_RESYNC_STARTED, (int) s->id, NULL, "resync started: %" PRIu64 " dirty regions to "
             "copy; the site is fed from the log again from seq %" PRIu64 " and is not consistent "
             "until the copy is done", total, start);
}

static bool
copy_overlaps (struct worker *w, const struct leg *l, uint64_t off, uint64_t len)
{
  unsigned i;
  for (i = 0; i < w->nio; i++) {
    const struct wio *io = &w->io[i];
    if (io->active && io->leg == l && io->off < off + len && off < io->off + io->len)
      return true;
  }
  return coalesce_queued_overlaps (w, l, off, len);   /* a run's pieces not sent yet */
}

static unsigned
leg_copies (struct worker *w, const struct leg *l)
{
  unsigned i, n = 0;
  for (i = w->nlog; i < w->nio; i++)
    n += w->io[i].active && w->io[i].leg == l;
  return n;
}

/* The extent of the copy that starts at dirty region bit of l: a run of
 * dirty regions, as long as a hole allows (write-zeroes), else as much as
 * a copy buffer holds and no longer than up to a region that is all hole.
 * Sets *n (regions), *off and *len; true for a run of zeroes. */
static bool
copy_extent (struct worker *w, struct leg *l, uint64_t bit, uint64_t *n,
             uint64_t *off, uint64_t *len)
{
  struct vdev *d = l->dev;
  struct bitmap *b = l->dirty_log;
  uint64_t rs = b->region_size, hole, max_bits;
  bool zero;

  /* A run of dirty regions: as long as a hole allows, else one chunk. */
  max_bits = RESYNC_ZERO_MAX / rs ? RESYNC_ZERO_MAX / rs : 1;
  for (*n = 1; *n < max_bits && bitmap_test (b, bit + *n); (*n)++)
    ;
  *off = bit * rs;
  *len = *n * rs;
  if (*off + *len > d->size)
    *len = d->size - *off;
  hole = rdev_hole_end (d, *off, *len);
  zero = hole >= *off + rs || hole == d->size;
  if (zero) {
    if (hole < *off + *len) {
      *n = (hole - *off) / rs ? (hole - *off) / rs : 1;
      *len = *n * rs;
      if (*off + *len > d->size)
        *len = d->size - *off;
    }
  }
  else {
    uint64_t k;
    *n = *n < w->cp.size / rs ? *n : (w->cp.size / rs ? w->cp.size / rs : 1);
    /* Stop the data run at a region that is all hole: it goes as zeroes. */
    for (k = 1; k < *n; k++)
      if (rdev_hole_end (d, *off + k * rs, rs) >= *off + (k + 1) * rs)
        break;
    *n = k;
    *len = *n * rs < d->size - *off ? *n * rs : d->size - *off;
  }
  return zero;
}

/* Read the data of a copy into its slot's buffer from the device view
 * (*reading: the local leg's part is still being read).  -1: the device
 * could not be read. */
static int
copy_read (struct worker *w, struct leg *l, unsigned slot, uint64_t off, uint64_t len,
           bool *reading)
{
  struct vdev *d = l->dev;
  unsigned k = slot - w->nlog;

  /* The unapplied entries now, the local leg's bytes asynchronously
   * (after: see rdev_read_view); else all of it synchronously. */
  if (w->eng.uring && len % d->local->lbs == 0 &&
      rdev_view_overlay (d, w->cp.buf[k], (uint32_t) len, off, w->cp.gaps[k], CP_GAPS, &w->cp.ngaps[k]) == 0) {
    if (w->cp.ngaps[k]) {
      struct io_uring_sqe *sqe = get_sqe (w);
      w->cp.gen[k]++;
      io_uring_prep_read (sqe, d->local->fd, w->cp.rbuf[k], (unsigned) len, off);
      io_uring_sqe_set_data64 (sqe, CPREAD_BIT | ((uint64_t) (w->cp.gen[k] & 0xffffff) << 16) | slot);
      *reading = true;
    }
  }
  else if (rdev_read_view (d, w->cp.buf[k], (uint32_t) len, off) == -1) {
    snprintf (l->last_error, sizeof l->last_error, "resync: reading the device at %" PRIu64 ": %m", off);
    return -1;
  }
  return 0;
}

/* Start one copy from leg index li.  false when that leg has nothing to
 * start now. */
static bool
copy_start (struct worker *w, unsigned li, unsigned slot, uint64_t durable)
{
  struct leg *l = w->legs[li];
  struct vdev *d = l->dev;
  struct bitmap *b = l->dirty_log;
  uint64_t bit, n, off, len;
  struct replog_stats st;
  struct wio *io = &w->io[slot];
  bool zero, reading;

  if (!resyncable (l) || (l->remote && leglabel_pending (l)))
    return false;                /* its label says "resync" first */
  for (;;) {
    bit = bitmap_next_set (b, w->rs.cursor[li]);
    if (bit < b->nbits)
      break;
    /* End of the bitmap: start over once this pass's copies are back
     * (their bits are still set until they complete). */
    if (w->rs.cursor[li] == 0 || leg_copies (w, l) || w->cc.nclr || w->cc.nclr_ck)
      return false;
    w->rs.cursor[li] = 0;
  }
  zero = copy_extent (w, l, bit, &n, &off, &len);
  w->rs.cursor[li] = bit + n;
  if (copy_overlaps (w, l, off, len))
    return false;                        /* a log write is there: on a later pass */
  reading = false;
  if (!zero && copy_read (w, l, slot, off, len, &reading) == -1) {
    w->rs.cursor[li] = bit;              /* try again on the next pass */
    return false;
  }
  replog_get_stats (w->r->rl, &st);
  *io = (struct wio) {
    .active = true, .leg = l, .copy = true, .staged = true, .reading = reading,
    .op = zero ? RL_OP_ZERO : RL_OP_WRITE, .flags = zero ? RL_FLAG_MAY_TRIM : 0,
    .off = off, .len = len, .buf = zero ? NULL : w->cp.buf[slot - w->nlog],
    .hold_seq = st.next_seq - 1, .first_bit = bit, .nbits = n, .w = w,
  };
  if (io->hold_seq > w->rs.high)
    w->rs.high = io->hold_seq;
  w->rs.ncopies++;
  if (!zero)
    ratelimit_charge (&w->rs.limit, len);      /* holes are not counted */
  rep_debugc (REP_DBG_RESYNC, "site %u: resync: device '%s' %s %" PRIu64 "+%" PRIu64, w->site->id,
              d->name, zero ? "zeroes" : "copies", off, len);
  if (!reading && durable >= io->hold_seq) {
    io->staged = false;
    io_issue (w, slot);
  }
  return true;
}

/* A copy's asynchronous read of the local leg completed. */
void
copy_read_done (struct worker *w, uint64_t tag, int res)
{
  unsigned slot = (unsigned) (tag & 0xffff), k, i;
  struct wio *io;
  struct replog_stats st;

  if (slot < w->nlog || slot >= w->nio)
    return;
  io = &w->io[slot];
  k = slot - w->nlog;
  if (!io->active || !io->copy || !io->reading || ((tag >> 16) & 0xffffff) != (w->cp.gen[k] & 0xffffff))
    return;                              /* a forgotten copy's */
  if (res == (int) io->len)
    for (i = 0; i < w->cp.ngaps[k]; i++)
      memcpy (w->cp.buf[k] + (w->cp.gaps[k][i][0] - io->off), w->cp.rbuf[k] + (w->cp.gaps[k][i][0] - io->off),
              w->cp.gaps[k][i][1] - w->cp.gaps[k][i][0]);
  else if (rdev_read_view (io->leg->dev, w->cp.buf[k], (uint32_t) io->len, io->off) == -1) {
    /* Not copied: its bits stay set, a later pass takes it again. */
    snprintf (io->leg->last_error, sizeof io->leg->last_error,
              "resync: reading the device at %" PRIu64 ": %m", io->off);
    io->active = false;
    w->rs.ncopies--;
    return;
  }
  io->reading = false;
  replog_get_stats (w->r->rl, &st);      /* the newest entry the bytes may hold */
  io->hold_seq = st.next_seq - 1;
  if (io->hold_seq > w->rs.high)
    w->rs.high = io->hold_seq;
}

/* A full resync asked while one runs (its bits just set again): every
 * region is copied again, also those whose copies wait for the next
 * checkpoint to clear their bits (the clears are dropped: those bits stay
 * set), and the total becomes what was copied plus what is set now, which
 * is what the regions copied reach at the end (a copy in flight clears the
 * bit it counts). */
void
resync_recount_full (struct worker *w)
{
  uint64_t n = __atomic_load_n (&w->site->resync.copied, __ATOMIC_RELAXED);
  unsigned i;

  w->cc.nclr = w->cc.nclr_ck = 0;
  for (i = 0; i < w->nlegs; i++)
    if (resyncable (w->legs[i]))
      n += bitmap_count (w->legs[i]->dirty_log);
  __atomic_store_n (&w->site->resync.regions, n, __ATOMIC_RELAXED);
}

void
copy_done (struct worker *w, struct wio *io)
{
  struct site *s = w->site;

  w->cc.clr[w->cc.nclr++] = (struct clr) { io->leg, io->first_bit, io->nbits };
  io->active = false;
  w->rs.ncopies--;
  w->hl.last_progress_ns = mono_ns ();
  __atomic_add_fetch (&s->resync.copied, io->nbits, __ATOMIC_RELAXED);
  if (io->op == RL_OP_WRITE)
    __atomic_add_fetch (&s->resync.bytes, io->len, __ATOMIC_RELAXED);
  else
    __atomic_add_fetch (&s->resync.zero_bytes, io->len, __ATOMIC_RELAXED);
}

/* resync_rate: the same token bucket as the site's rate (ratelimit.h),
 * charged with a data copy's bytes once it starts (its size is known only
 * then); a copy starts while the bucket is not in debt.  The site's rate,
 * if any, then applies to the copy on the wire too (worker-remote.c). */
static bool
rate_allows (struct worker *w, uint64_t now)
{
  uint64_t wait;

  if (ratelimit_ready (&w->rs.limit, now, &wait))
    return true;
  wake_at (w, now + wait);
  return false;
}

static void
resync_finish (struct worker *w)
{
  struct site *s = w->site;
  double secs = (double) since (mono_ns (), s->resync.started_ns) / 1e9;
  unsigned i;

  if (s->id == 0)
    restore_finish (w);
  else if (replog_change_site_flags (w->r->rl, s->id, 0, RL_SITE_RESYNC | RL_SITE_IN_DOUBT) == -1) {
    rep_error ("site %u: resync: could not record its end in the log header: %m", s->id);
    return;
  }
  pthread_mutex_lock (&s->lock);
  site_resync_done_locked (s);
  __atomic_add_fetch (&s->resync.finished, 1, __ATOMIC_RELAXED);
  if (s->id) {
    /* Consistent again: at the applied seq, which covers every copy. */
    const struct rl_desc *d = replog_desc (w->r->rl, w->posted);
    s->cons.seq = w->posted;
    s->cons.time_ns = d->seq == w->posted ? d->time_ns : 0;
    s->cons.valid = true;
  }
  pthread_mutex_unlock (&s->lock);
  for (i = 0; i < w->nlegs; i++)
    __atomic_store_n (&w->legs[i]->initial_sync, false, __ATOMIC_RELAXED);
  resync_labels (w, true, s->cons.time_ns);
  w->rs.backoff_ns = 0;
  w->rs.flushing = false;
  resync_free_buffers (w);
  rep_event (EV_RESYNC_FINISHED, (int) s->id, NULL, "resync finished: %" PRIu64 " regions, %"
             PRIu64 " MiB of data and %" PRIu64 " MiB of zeroes in %.1f s; the site is consistent "
             "again", s->resync.copied, s->resync.bytes >> 20, s->resync.zero_bytes >> 20, secs);
}

/* A site in log mode with in-doubt regions (an aborted connection):
 * once the grace period is over, copy them again; or a full resync was
 * asked for.  An in-place resync: the site stays in log mode. */
void
doubt_check (struct worker *w, uint64_t now)
{
  unsigned i;
  if (site_state_is_resync (site_state (w->site)))
    return;
  if (w->rs.want) {
    w->rs.want = false;
    resync_begin (w, now);
    return;
  }
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (l->doubt_pending && l->link.up && since (now, l->link.down_since_ns) > DOUBT_GRACE_NS) {
      rep_info ("site %u: copying the regions of in-doubt writes again", w->site->id);
      w->rs.doubt_only = true;
      resync_begin (w, now);
      w->rs.doubt_only = false;
      return;
    }
  }
}

/* The copies are done and the legs being flushed: the resync ends once a
 * checkpoint that started after the copies completed has completed,
 * unless new work came in meanwhile. */
static void
resync_flushing (struct worker *w, uint64_t now)
{
  uint64_t drops = 0;
  bool more = false;
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    drops += l->link.drops;
    more |= (resyncable (l) && bitmap_next_set (l->dirty_log, 0) < l->dirty_log->nbits) ||
      (l->doubt && bitmap_next_set (l->doubt, 0) < l->doubt->nbits);
  }
  if (more || drops != w->rs.flush_drops || w->rw.pending) {
    w->rs.flushing = false;            /* new work came in (resync --full, a drop) */
    return;
  }
  if (w->ck.count > w->rs.flush_from)
    resync_finish (w);
  else if (!w->ck.busy && now >= w->ck.retry_at) {
    w->ck.force = true;                /* a failed flush: again */
    ckpt_start (w, w->done);
  }
}

/* Start copies, round robin over the legs, within the queue, the rate
 * and the completed copies a checkpoint takes.  True if any started. */
static bool
copies_start (struct worker *w, uint64_t now, uint64_t durable)
{
  unsigned slot, tries;
  bool any = false;

  /* Completed copies count as copied once a leg flush covers them. */
  if ((w->cc.nclr >= CLR_MAX - RESYNC_QD || (w->cc.nclr && !w->rs.ncopies)) && !w->ck.busy &&
      now >= w->ck.retry_at) {
    w->ck.force = true;
    ckpt_start (w, w->done);
  }
  for (tries = 0; tries < w->nlegs && w->rs.ncopies < RESYNC_QD && rate_allows (w, now) &&
                  w->cc.nclr + w->rs.ncopies < CLR_MAX; ) {
    unsigned li = (unsigned) ((w->rs.cursor[w->nlegs] + tries) % w->nlegs);
    for (slot = w->nlog; slot < w->nio && w->io[slot].active; slot++)
      ;
    if (copy_start (w, li, slot, durable)) {
      any = true;
      w->rs.cursor[w->nlegs] = li + 1;     /* round robin over the legs */
      tries = 0;
      continue;
    }
    tries++;
  }
  return any;
}

/* No dirty region left on any leg, and no in-doubt one (those past their
 * grace period are queued for copying now). */
static bool
resync_all_copied (struct worker *w, uint64_t now)
{
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (resyncable (l) && bitmap_next_set (l->dirty_log, 0) < l->dirty_log->nbits)
      return false;
    /* Writes of an aborted connection may still land: copy those regions
     * again once they can no longer. */
    if (l->doubt && bitmap_next_set (l->doubt, 0) < l->doubt->nbits) {
      if (since (now, l->link.down_since_ns) > DOUBT_GRACE_NS && l->link.up) {
        bitmap_merge (l->dirty_log, l->doubt);
        l->doubt_pending = false;
        w->rs.cursor[i] = 0;
      }
      return false;
    }
  }
  return true;
}

/* One step of a resync: start copies, release staged ones, finish. */
void
resync_step (struct worker *w, uint64_t now, uint64_t durable)
{
  struct site *s = w->site;
  unsigned slot, i;
  bool any;

  if (!site_state_is_resync (site_state (s)) || durable + 1 < w->rs.start)
    return;
  for (slot = w->nlog; slot < w->nio; slot++) {
    struct wio *io = &w->io[slot];
    if (io->active && io->staged && !io->reading && durable >= io->hold_seq) {
      io->staged = false;
      io_issue (w, slot);
    }
  }
  if (w->rs.flushing) {
    resync_flushing (w, now);
    return;
  }
  if (!links_all_up (w))
    return;
  any = copies_start (w, now, durable);
  if (any || w->rs.ncopies || w->cc.nclr || w->cc.nclr_ck || w->done < w->rs.high)
    return;
  if (!resync_all_copied (w, now))
    return;
  /* Every region copied and the log applied past every copy's data:
   * flush the copies to stable storage before the header says so. */
  w->rs.flushing = true;
  w->rs.flush_from = w->ck.count;
  w->rs.flush_drops = 0;
  for (i = 0; i < w->nlegs; i++)
    w->rs.flush_drops += w->legs[i]->link.drops;
  if (!w->ck.busy) {
    w->ck.force = true;
    ckpt_start (w, w->done);
  }
  else
    w->rs.flush_from = w->ck.count + 1;  /* the one under way may predate the copies */
}
