/* worker-apply.c: the apply core.  Entries are taken from the log in
 * order (fill), issued to their leg (io_issue: io_uring, a synchronous
 * call, or the remote leg's connection), their results handled
 * (io_result) and completions finished in batches (finish_batch, then
 * mark_done).
 *
 * Loop shape (liburing's io_uring-cp): queue as many entries as the queue
 * depth allows, submit once, then reap completions.  Rules kept here:
 *   - entries are taken in log order and only once durable in the log;
 *   - no two overlapping entries of one device are in flight at once (the
 *     later one waits for the earlier to complete);
 *   - a barrier (end of epoch k) is crossed only when everything before it
 *     has completed, the legs are flushed (fdatasync, NBD FLUSH, SCSI
 *     SYNCHRONIZE CACHE) and the header durably records applied >= the
 *     barrier: epoch k+1 never starts before epoch k is durable there.
 *     With one worker per site feeding all the site's legs, this holds
 *     across every device of the instance;
 *   - short writes are resubmitted for the rest, -EAGAIN/-EINTR retried;
 *     an I/O error is retried after a pause (the entry stays in the log);
 *   - a remote site behind coalesces within one epoch (coalesce_start, see
 *     struct wk_coalesce): a run of the epoch's entries goes as the pieces
 *     no later entry of the run overwrites, and counts done as a whole.
 *
 * Owns: the log slots of w->io (0..qd-1), next/done/cdone/ninflight, the
 * finish list (fin), done_seq's publication after a completion, the
 * rewind (re-sending after the applied sequence once what was in flight
 * is back), the read index trimming of the serving site.
 * Invariants: an entry leaves the read index only once it is on the leg,
 * and is counted done only once it left the index.
 * May call: worker-remote.c (remote_issue, link_down), worker-ckpt.c
 * (ckpt_start), worker-local.c (local_fail), worker-int.h helpers; a
 * completed resync copy through the w->on_copy_done callback.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "bitmap.h"
#include "link.h"
#include "overlay.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"
#include "worker-int.h"

/* Pause before retrying a failed local operation. */
static void
backoff (void)
{
  struct timespec ts = { 0, 200 * 1000000 };
  nanosleep (&ts, NULL);
}

/* fallocate mode for a zero or trim op on this leg; 0 = write zeroes. */
static int
zero_mode (const struct wio *io)
{
  const struct leg *l = io->leg;
  bool punch = io->op == RL_OP_TRIM || (io->flags & RL_FLAG_MAY_TRIM);

  if (punch && l->punch_ok)
    return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (l->zero_range_ok)
    return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  if (l->punch_ok)
    return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  return 0;
}

/* Issue (or perform) the next piece of io. */
void
io_issue (struct worker *w, unsigned idx)
{
  struct wio *io = &w->io[idx];
  int fd = io->leg->fd;
  uint64_t rest = io->len - io->done;
  const void *src = io->buf ? io->buf + io->done : NULL;
  int mode = 0;

  if (io->leg->remote) {
    remote_issue (w, idx);
    return;
  }
  if (io->op != RL_OP_WRITE && !io->zerofill) {
    mode = zero_mode (io);
    if (mode == 0)
      io->zerofill = true;
  }
  if (io->zerofill) {
    src = w->zbuf;
    if (rest > ZBUF_SIZE)
      rest = ZBUF_SIZE;
  }
  if (w->eng.uring) {
    struct io_uring_sqe *sqe = get_sqe (w);
    if (src)
      io_uring_prep_write (sqe, fd, src, (unsigned) rest, io->off + io->done);
    else
      io_uring_prep_fallocate (sqe, fd, mode, (off_t) (io->off + io->done), (off_t) rest);
    io_uring_sqe_set_data64 (sqe, idx);
  }
  else {
    ssize_t r;
    if (src)
      r = pwrite (fd, src, (size_t) rest, (off_t) (io->off + io->done));
    else
      r = fallocate (fd, mode, (off_t) (io->off + io->done), (off_t) rest) == 0 ? (ssize_t) rest : -1;
    push_ready (w, idx, r >= 0 ? (int) r : -errno);
  }
}

/* A free log slot (there is one: ninflight is under the limit), looked
 * for from after the last one taken. */
static unsigned
free_slot (struct worker *w)
{
  unsigned i, idx;

  for (i = 0; i < w->nlog; i++) {
    idx = (w->slot_hint + i) % w->nlog;
    if (!w->io[idx].active) {
      w->slot_hint = idx + 1;
      return idx;
    }
  }
  abort ();                              /* ninflight < the limit <= nlog */
}

static bool
overlaps_inflight (struct worker *w, uint32_t dev, uint64_t off, uint64_t len)
{
  unsigned i;
  for (i = 0; i < w->nio; i++) {
    const struct wio *io = &w->io[i];
    if (io->active && io->leg->dev->index == dev &&
        io->off < off + len && off < io->off + io->len)
      return true;
  }
  return false;
}

static void
mark_done (struct worker *w, uint64_t seq)
{
  w->cdone[seq % w->ndesc] = 1;
  if (seq != w->done + 1)
    return;
  while (w->done + 1 < w->next && w->cdone[(w->done + 1) % w->ndesc]) {
    w->cdone[(w->done + 1) % w->ndesc] = 0;
    w->done++;
  }
  if (w->done > w->rw.done_hwm) {           /* entries sent again are not progress */
    w->rw.done_hwm = w->done;
    w->hl.last_progress_ns = w->ck.last_done_ns = mono_ns ();
  }
  publish_done (w);
}

/* An entry is on its leg.  Completions are finished in batches (see
 * finish_batch): one overlay lock per device per reap, not per entry.
 * A resync copy's completion goes to the resync (w->on_copy_done). */
static void
io_complete (struct worker *w, struct wio *io)
{
  if (io->copy) {
    w->on_copy_done (w, io);
    return;
  }
  /* A failed local leg that no remote site serves comes back only once a
   * checkpoint flushed it (local_back): a write that succeeds proves
   * nothing about the writes a failed flush lost. */
  io->leg->written_ok = true;
  if (io->leg->state == LEG_FAILED && (io->leg->site != 0 || !io->leg->dev->local_out) &&
      !io->leg->sync_failed) {
    rep_info ("device '%s': leg at site %u is writable again", io->leg->dev->name, io->leg->site);
    __atomic_store_n (&io->leg->state, LEG_REPLICATING, __ATOMIC_RELAXED);
  }
  if (io->leg->last_error[0] && strncmp (io->leg->last_error, "flush: ", 7) != 0)
    io->leg->last_error[0] = 0;        /* a flush error is cleared by a flush */
  w->fin[w->nfin++] = *io;
  io->active = false;
  w->ninflight--;
}

/* ---- coalescing within one epoch (struct wk_coalesce) ----------------- */

void
coalesce_free (struct worker *w)
{
  size_t i;
  if (w->co.ov)
    for (i = 0; i < w->r->ndevs; i++)
      overlay_free (w->co.ov[i]);
  free (w->co.ov);
  free (w->co.p);
  free (w->co.has_piece);
  w->co.ov = NULL;
  w->co.p = NULL;
  w->co.has_piece = NULL;
}

/* A piece of the run not issued yet overlaps [off, off+len) of leg l: a
 * resync copy there waits for it (safety rule 6: a copy must not be
 * overwritten by an older entry's bytes). */
bool
coalesce_queued_overlaps (struct worker *w, const struct leg *l, uint64_t off, uint64_t len)
{
  unsigned i;
  if (!w->co.on)
    return false;
  for (i = w->co.issued; i < w->co.np; i++) {
    const struct co_piece *p = &w->co.p[i];
    if (w->leg_of_dev[p->dev] == l && p->off < off + len && off < p->off + p->len)
      return true;
  }
  return false;
}

/* Entry seq ([off, off + len) of device d) leaves d's read index if this
 * site serves d's reads (site 0: the local leg; a remote one while the
 * local leg is out of service).  The lock of the device last touched is
 * kept in *locked (one lock per device per batch, not per entry). */
static void
unindex (struct worker *w, struct vdev **locked, struct vdev *d, uint64_t off, uint64_t len,
         uint64_t seq)
{
  if (__atomic_load_n (&d->read_site, __ATOMIC_RELAXED) != w->site->id)
    return;
  if (d != *locked) {
    if (*locked)
      pthread_mutex_unlock (&(*locked)->ov_lock);
    pthread_mutex_lock (&d->ov_lock);
    *locked = d;
  }
  if (d->read_site == w->site->id && !(d->read_site == 0 && d->local_out))
    overlay_remove (d->ov, off, off + len, seq);
}

/* The run's entries leave the read index of the devices this site serves
 * (it took over the reads while the run was under way: the index then got
 * every entry after done, those of pieces completed before too, and those
 * no piece carries): an entry counted done is released by the log, and
 * the index must not point at it (finish_batch's rule). */
static void
run_unindex (struct worker *w)
{
  struct vdev *locked = NULL;
  uint64_t seq;

  for (seq = w->co.first; seq <= w->co.last; seq++) {
    const struct rl_desc *e = replog_desc (w->r->rl, seq);
    if (e->seq == seq && e->op != RL_OP_BARRIER && e->device < w->r->ndevs)
      unindex (w, &locked, &w->r->devs[e->device], e->offset, e->length, seq);
  }
  if (locked)
    pthread_mutex_unlock (&locked->ov_lock);
}

/* Every piece of the run completed: each of its entries is on the legs
 * (its bytes, or a newer entry's of the same run), so all count done. */
static void
run_done (struct worker *w)
{
  struct site *s = w->site;
  uint64_t seq, n = w->co.last - w->co.first + 1;

  if (__atomic_load_n (&s->read_site_devs, __ATOMIC_ACQUIRE))
    run_unindex (w);

  for (seq = w->co.first + 1; seq <= w->co.last; seq++)
    w->cdone[seq % w->ndesc] = 1;
  w->co.on = false;
  w->co.acked = false;
  __atomic_add_fetch (&s->coalesced_bytes, w->co.wbytes - w->co.wsent, __ATOMIC_RELAXED);
  __atomic_add_fetch (&s->coalesced_entries, n - w->co.nsent, __ATOMIC_RELAXED);
  __atomic_add_fetch (&s->coalesced_runs, 1, __ATOMIC_RELAXED);
  rep_debugc (REP_DBG_WORKER, "site %u: coalesced run %" PRIu64 "..%" PRIu64 " done: %" PRIu64
              " of %" PRIu64 " write bytes sent, %" PRIu64 " of %" PRIu64 " entries",
              s->id, w->co.first, w->co.last, w->co.wsent, w->co.wbytes, w->co.nsent, n);
  mark_done (w, w->co.first);
}

/* A piece completed (finish_batch). */
static void
piece_done (struct worker *w, const struct wio *io)
{
  if (!w->co.on || io->seq < w->co.first || io->seq > w->co.last || !w->co.left)
    return;                              /* of a run given up (rewind) */
  w->co.acked = true;
  if (io->seq > w->rw.done_hwm)          /* progress, for the watchdog */
    w->hl.last_progress_ns = w->ck.last_done_ns = mono_ns ();
  if (--w->co.left == 0 && w->co.issued == w->co.np)
    run_done (w);
}

struct co_collect {
  struct worker *w;
  uint32_t dev;
  bool full;
};

static void
collect_piece (const struct ov_piece *op, void *opaque)
{
  struct co_collect *c = opaque;
  struct wk_coalesce *co = &c->w->co;

  if (co->np == co->cap) {
    c->full = true;                      /* cannot happen: at most 2 per entry */
    return;
  }
  co->p[co->np++] = (struct co_piece) {
    .off = op->start, .len = op->end - op->start, .seq = op->seq, .dev = c->dev,
  };
}

/* Empty every device's interval map (its nodes stay for the next run). */
static void
maps_clear (struct worker *w)
{
  unsigned i;
  for (i = 0; i < w->co.np; i++)
    overlay_remove (w->co.ov[w->co.p[i].dev], w->co.p[i].off, w->co.p[i].off + w->co.p[i].len,
                    w->co.p[i].seq);
}

/* May this site coalesce now?  A remote site (not switched off) that is
 * fed from the log, not resyncing (copies and the log stay as they are
 * there), whose clients do not wait for each entry (async, or a sync site
 * catching up or disconnected), serves no device's reads, and no writer
 * waits for log space (a run holds the tail until it is done). */
static bool
coalesce_allowed (struct worker *w)
{
  struct site *s = w->site;
  enum site_state st;

  if (!w->co.enabled || w->st.on || __atomic_load_n (&s->read_site_devs, __ATOMIC_RELAXED))
    return false;                        /* streaming: no round trip to save */
  st = site_state (s);
  if (site_state_is_dirty_log (st) || site_state_is_resync (st))
    return false;
  if (__atomic_load_n (&s->policy, __ATOMIC_RELAXED) != POLICY_ASYNC &&
      !site_state_is_catching_up (st) && !site_state_is_disconnected (st))
    return false;
  return !replog_space_wanted (w->r->rl);       /* last: it takes the log's lock */
}

/* The run that may start at w->next: its length (entries up to the
 * epoch's barrier, the durable end, or a bound) and write payload. */
static uint64_t
run_scan (struct worker *w, uint64_t durable, uint64_t *bytes)
{
  struct replicator *r = w->r;
  uint64_t seq, n, max = COALESCE_MAX, epoch = replog_desc (r->rl, w->next)->epoch;

  if (max > w->ndesc / 4)
    max = w->ndesc / 4;
  *bytes = 0;
  for (n = 0, seq = w->next; seq <= durable && n < max; seq++, n++) {
    const struct rl_desc *d = replog_desc (r->rl, seq);
    if (d->op == RL_OP_BARRIER || d->epoch != epoch)
      break;
    if (d->op == RL_OP_WRITE) {
      if (*bytes + d->length > COALESCE_BYTES && n)
        break;
      *bytes += d->length;
    }
  }
  return n;
}

/* The pieces of the n entries from w->next: each device's interval map,
 * newest wins (inserted in log order, each entry is one extent when
 * inserted: at most two extents per entry), read out in offset order and
 * emptied again.  -1: out of memory (the maps are dropped). */
static int
run_pieces (struct worker *w, uint64_t n)
{
  struct wk_coalesce *co = &w->co;
  struct replicator *r = w->r;
  uint64_t seq;
  unsigned i;

  if (!co->ov && !(co->ov = calloc (r->ndevs, sizeof *co->ov)))
    return -1;
  if (co->cap < 2 * n + 2) {
    struct co_piece *p = realloc (co->p, (2 * n + 2) * sizeof *p);
    if (!p)
      return -1;
    co->p = p;
    co->cap = (unsigned) (2 * n + 2);
  }
  if (!co->has_piece && !(co->has_piece = malloc (COALESCE_MAX / 8)))
    return -1;
  co->np = 0;
  for (seq = w->next; seq < w->next + n; seq++) {
    const struct rl_desc *d = replog_desc (r->rl, seq);
    if (!w->leg_of_dev[d->device])
      continue;                          /* no leg of this device here */
    if (!co->ov[d->device] && !(co->ov[d->device] = overlay_new ()))
      goto nomem;
    if (overlay_insert (co->ov[d->device], d->offset, d->offset + d->length, seq,
                        d->op == RL_OP_WRITE ? OV_DATA : OV_ZERO, NULL) == -1)
      goto nomem;
  }
  for (i = 0; i < r->ndevs; i++)
    if (co->ov[i]) {
      struct co_collect c = { .w = w, .dev = i };
      overlay_foreach (co->ov[i], 0, UINT64_MAX, collect_piece, &c);
      if (c.full)
        goto nomem;
    }
  maps_clear (w);
  return 0;

 nomem:
  for (i = 0; i < r->ndevs; i++) {
    overlay_free (co->ov[i]);
    co->ov[i] = NULL;
  }
  co->np = 0;
  return -1;
}

/* Start a coalesced run at w->next (not a barrier) if the site is behind
 * by at least COALESCE_MIN entries of this epoch.  Returns true if it
 * took entries (the run is on, or already done). */
static bool
coalesce_start (struct worker *w, uint64_t durable)
{
  struct wk_coalesce *co = &w->co;
  uint64_t seq, n, bytes;
  unsigned i;

  if (w->next < co->plain_until || durable < w->next + COALESCE_MIN - 1)
    return false;
  if (!coalesce_allowed (w)) {
    co->plain_until = w->next + COALESCE_MIN;   /* asked again some entries later */
    return false;
  }
  n = run_scan (w, durable, &bytes);
  if (n < COALESCE_MIN || run_pieces (w, n) == -1) {
    co->plain_until = w->next + n;       /* these go one by one: no scan again */
    return false;
  }
  co->first = w->next;
  co->last = w->next + n - 1;
  co->wbytes = bytes;
  co->wsent = co->nsent = 0;
  memset (co->has_piece, 0, (n + 7) / 8);
  for (i = 0; i < co->np; i++) {
    uint64_t k = co->p[i].seq - co->first;
    if (replog_desc (w->r->rl, co->p[i].seq)->op == RL_OP_WRITE)
      co->wsent += co->p[i].len;
    if (!(co->has_piece[k / 8] & (1u << (k % 8)))) {
      co->has_piece[k / 8] |= (uint8_t) (1u << (k % 8));
      co->nsent++;
    }
  }
  for (seq = co->first; seq <= co->last; seq++)
    w->cdone[seq % w->ndesc] = 0;
  co->issued = 0;
  co->left = co->np;
  co->acked = false;
  co->on = true;
  w->next = co->last + 1;
  rep_debugc (REP_DBG_WORKER, "site %u: coalesced run %" PRIu64 "..%" PRIu64 ": %u pieces, %"
              PRIu64 " of %" PRIu64 " write bytes to send", w->site->id, co->first, co->last,
              co->np, co->wsent, co->wbytes);
  if (!co->np)
    run_done (w);                        /* nothing of it goes to a leg here */
  return true;
}

/* Issue the run's pieces up to the queue depth; stops at a piece that
 * overlaps something in flight (an earlier entry, a resync copy). */
static void
coalesce_issue (struct worker *w)
{
  struct wk_coalesce *co = &w->co;

  while (w->ninflight < w->qd && co->issued < co->np) {
    const struct co_piece *p = &co->p[co->issued];
    const struct rl_desc *d = replog_desc (w->r->rl, p->seq);
    unsigned idx;

    if (overlaps_inflight (w, p->dev, p->off, p->len))
      return;
    idx = free_slot (w);
    w->io[idx] = (struct wio) {
      .active = true, .seq = p->seq, .leg = w->leg_of_dev[p->dev],
      .op = d->op, .flags = d->flags, .off = p->off, .len = p->len,
      .buf = d->op == RL_OP_WRITE ? (const uint8_t *) replog_payload (w->r->rl, d) + (p->off - d->offset) : NULL,
      .w = w, .piece = true,
    };
    w->ninflight++;
    co->issued++;
    io_issue (w, idx);
  }
}

/* Drop the batch's entries from the read index (site 0), then count them
 * done: an entry leaves the index only once it is on the leg, and is
 * reported applied only once it left the index. */
void
finish_batch (struct worker *w)
{
  struct vdev *locked = NULL;
  uint64_t bytes = 0;
  unsigned i;

  /* The site whose leg serves a device's reads trims its index. */
  for (i = 0; i < w->nfin; i++)
    if (!w->fin[i].marker)
      unindex (w, &locked, w->fin[i].leg->dev, w->fin[i].off, w->fin[i].len, w->fin[i].seq);
  if (locked)
    pthread_mutex_unlock (&locked->ov_lock);
  for (i = 0; i < w->nfin; i++) {
    if (w->fin[i].marker) {
      stream_record_done (w);
      continue;
    }
    if (w->fin[i].op == RL_OP_WRITE)
      bytes += w->fin[i].len;
    if (w->fin[i].piece)
      piece_done (w, &w->fin[i]);
    else
      mark_done (w, w->fin[i].seq);
  }
  if (bytes)
    __atomic_add_fetch (&w->site->log_bytes_sent, bytes, __ATOMIC_RELAXED);
  w->nfin = 0;
}

/* A write (or zero) of io failed for good (errno -res): retried after a
 * pause; a failed local leg of site 0 may go out of service instead.
 * Returns true if the io needs reissuing. */
static bool
io_failed (struct worker *w, struct wio *io, int res)
{
  struct leg *l = io->leg;

  errno = -res;
  __atomic_add_fetch (&l->errors, 1, __ATOMIC_RELAXED);
  l->written_ok = false;
  if (!l->last_error[0])
    rep_error ("device '%s': leg %s (site %u): write at %" PRIu64 " failed: %m; "
               "the entry stays in the log and is retried", l->dev->name, l->cfg->path,
               l->site, io->off + io->done);
  snprintf (l->last_error, sizeof l->last_error, "write at %" PRIu64 ": %m", io->off + io->done);
  if (l->remote) {
    io->retry_at = mono_ns () + RETRY_NS;
    io->parked = true;
    return false;
  }
  if (l->site == 0 && !io->copy && local_fail (w, l, "write", -res)) {
    /* Out of service, a remote site serves the device: the entry is
     * what the leg misses now. */
    bitmap_set_range (l->dirty_log, io->off, io->len);
    io_complete (w, io);
    return false;
  }
  __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
  backoff ();                  /* the leg may come back */
  return true;
}

/* A failed result (res < 0) for io: a refusal to fall back from, a lost
 * connection, or a failure.  Returns true if the io needs reissuing. */
static bool
io_error (struct worker *w, struct wio *io, int res)
{
  struct leg *l = io->leg;

  if (l->remote && w->st.on && l == w->st.leg && !io->copy) {
    /* Streaming: the receiver takes nothing more on this connection after
     * a failed change (nothing may land after a hole): a new connection
     * starts again after what it holds. */
    char why[128];
    errno = -res;
    snprintf (why, sizeof why, "a change failed at the receiver: %m");
    link_down (w, l, false, why);
    return false;
  }
  if (l->remote && (res == -EINVAL || res == -EOPNOTSUPP) && io->op != RL_OP_WRITE &&
      !io->zerofill) {
    /* The remote refused its write-zeroes (WRITE SAME): zeroes, written. */
    if (!l->zero_refused)
      rep_info ("device '%s': leg at site %u refuses write-zeroes: writing zeroes instead",
                l->dev->name, l->site);
    l->zero_refused = true;
    io->zerofill = true;
    return true;
  }
  if (l->remote && res < 0 && link_conn_error (res)) {
    errno = -res;
    char why[96];
    snprintf (why, sizeof why, "%m");
    /* A request that timed out (libiscsi's task timeout) may still run at
     * the remote: in doubt like the others in flight (safety rule 5). */
    if (res == -ETIMEDOUT)
      io->sent = true;
    if (l->link.up)
      link_down (w, l, res == -ETIMEDOUT, why);
    io->sent = false;
    io->parked = true;
    return false;                        /* re-sent once reconnected */
  }
  if (!l->remote && res < 0 && io->op != RL_OP_WRITE && !io->zerofill &&
      (res == -EOPNOTSUPP || res == -EINVAL || res == -ENODEV)) {
    /* This leg cannot do that fallocate mode: switch it off for good. */
    int mode = zero_mode (io);
    if (mode & FALLOC_FL_PUNCH_HOLE)
      l->punch_ok = false;
    else
      l->zero_range_ok = false;
    rep_debugc (REP_DBG_WORKER, "device '%s': leg %s: fallocate mode 0x%x unsupported, falling back",
               l->dev->name, l->cfg->path, mode);
    return true;
  }
  return io_failed (w, io, res);
}

/* Handle one result for io idx.  Returns true if the io needs reissuing. */
bool
io_result (struct worker *w, unsigned idx, int res)
{
  struct wio *io = &w->io[idx];
  struct leg *l = io->leg;

  if (res == -EAGAIN || res == -EINTR)
    return true;
  if (res < 0)
    return io_error (w, io, res);
  if (res == 0 && (io->op == RL_OP_WRITE || io->zerofill)) {
    errno = ENOSPC;
    rep_error ("device '%s': leg %s: write at %" PRIu64 " wrote nothing", l->dev->name,
               l->cfg->path, io->off + io->done);
    if (l->remote) {
      io->retry_at = mono_ns () + RETRY_NS;
      io->parked = true;
      return false;
    }
    backoff ();
    return true;
  }
  if (!l->remote) {              /* power-loss trace (pftrace.h) */
    if (io->op == RL_OP_WRITE && !io->zerofill)
      pft_write (l->fd, io->buf + io->done, (uint64_t) res, io->off + io->done);
    else
      pft_zero (l->fd, io->off + io->done, io->zerofill ? (uint64_t) res : io->len - io->done);
  }
  if (io->op == RL_OP_WRITE || io->zerofill || l->remote)
    io->done += (uint64_t) res;  /* remote zeroes: the bytes it took (a part, maybe) */
  else
    io->done = io->len;          /* fallocate returns 0 on success */
  if (io->done < io->len)
    return true;                 /* short write: the rest */
  io_complete (w, io);
  return false;
}

void
drain_ready (struct worker *w)
{
  while (w->nready) {
    struct ready rd = w->ready[--w->nready];
    if (w->io[rd.idx].active && io_result (w, rd.idx, rd.res))
      io_issue (w, rd.idx);
  }
}

/* Queue entries up to the queue depth; stops early at a barrier that
 * needs the pipeline empty, or at an entry overlapping one in flight. */
void
fill (struct worker *w, uint64_t durable)
{
  struct replicator *r = w->r;

  if (w->rw.pending) {
    /* Once what is in flight is back: start again after the applied
     * sequence.  A checkpoint under way may have been submitted on the
     * lost connection: its result does not count (ckpt_result). */
    if (w->ninflight || w->ck.busy)
      return;
    memset (w->cdone, 0, w->ndesc);
    w->next = w->posted + 1;
    w->done = w->posted;
    w->rw.pending = false;
    coalesce_reset (w);
    stream_resume (w, durable);
    rep_debugc (REP_DBG_WORKER, "site %u: re-sending from seq %" PRIu64 " (after a lost connection)",
                w->site->id, w->next);
  }
  if (w->co.on) {
    /* A run under way: its pieces only; nothing after it until it is done. */
    coalesce_issue (w);
    return;
  }

  while (w->ninflight < (w->st.on ? w->nlog : w->qd) && w->next <= durable) {
    const struct rl_desc *d;
    struct leg *l;
    unsigned idx;

    if (w->st.on && w->st.parked)
      return;                            /* strictly in order */
    d = replog_desc (r->rl, w->next);
    if (d->op == RL_OP_BARRIER && w->st.on) {
      /* Streaming: everything before it was sent; its record follows. */
      if (!stream_barrier (w, w->next, d->time_ns))
        return;
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      continue;
    }
    if (d->op == RL_OP_BARRIER) {
      if (w->ninflight || w->ck.busy || w->done != w->next - 1)
        return;                          /* epoch k must complete first */
      /* Epoch boundary: flush the legs, the header records applied >= the
       * barrier, and only then does epoch k+1 start here.  On failure we
       * stay before the barrier and try again. */
      if (w->posted < w->next) {
        if (mono_ns () >= w->ck.retry_at)
          ckpt_start (w, w->next);
        if (w->posted < w->next)
          return;                        /* the flush is under way */
      }
      if (replog_wait_applied (r->rl, w->site->id, w->next) == -1) {
        w->ck.retry_at = mono_ns () + RETRY_NS;
        return;
      }
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      rep_debugc (REP_DBG_WORKER, "site %u: epoch boundary at seq %" PRIu64 " crossed",
                  w->site->id, w->next - 1);
      continue;
    }
    if (coalesce_start (w, durable)) {
      if (w->co.on) {
        coalesce_issue (w);
        return;
      }
      continue;                          /* nothing of the run went to a leg */
    }
    l = w->leg_of_dev[d->device];
    if (l && out_of_service (l)) {
      bitmap_set_range (l->dirty_log, d->offset, d->length);
      l = NULL;                          /* the leg misses it (restore copies it) */
    }
    if (!l) {                            /* no leg of this device here */
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      continue;
    }
    if ((!w->st.on || w->rs.ncopies) && overlaps_inflight (w, d->device, d->offset, d->length))
      return;                            /* streaming: the receiver keeps the order */
    idx = free_slot (w);
    w->io[idx] = (struct wio) {
      .active = true, .seq = w->next, .leg = l,
      .op = d->op, .flags = d->flags, .off = d->offset, .len = d->length,
      .buf = d->op == RL_OP_WRITE ? replog_payload (r->rl, d) : NULL,
      .w = w,
    };
    w->cdone[w->next % w->ndesc] = 0;
    w->ninflight++;
    w->next++;
    io_issue (w, idx);
  }
}
