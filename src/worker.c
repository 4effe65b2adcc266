/* worker.c: one thread per site applies the log to that site's legs.
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
 *   - between barriers we checkpoint (flush legs, post applied) when the
 *     log wants space, when idle, or every so often;
 *   - short writes are resubmitted for the rest, -EAGAIN/-EINTR retried;
 *     an I/O error is retried after a pause (the entry stays in the log).
 *
 * Legs are files or block devices (io_uring, or synchronous calls when
 * io_uring is refused) or remote connections (link.h).  A remote leg's
 * socket is polled through the same ring (one-shot POLL_ADD, re-armed when
 * its fd or events change, tagged with a generation), so one thread drives
 * the local leg, the path legs and every connection of a site.  The log
 * pokes an eventfd when there is new work.
 *
 * Remote links: every request has a deadline (request_timeout); past it the
 * connection is aborted and what it had in flight is in doubt (neither NBD
 * nor an iSCSI session reinstatement stops a write the remote already
 * runs: those regions are recorded, see leg->doubt).  A lost connection
 * parks its requests; the connector thread reconnects with backoff and the
 * parked requests are re-sent (re-sending entries of the current epoch is
 * idempotent).  A site that makes no progress for disconnect_timeout is
 * marked disconnected: clients stop waiting for it.  When writers wait for
 * log space and the site holds the tail, a disconnected site at once, or a
 * connected one after pull_ahead, is moved to dirty-log mode.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include <liburing.h>

#include "dirtylog.h"
#include "link.h"
#include "event.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"

#define ZBUF_SIZE        (1u << 20)
#define CKPT_INTERVAL_NS (500u * 1000000u)    /* checkpoint at least this often */
#define CKPT_FULL_NS     (5u * 1000000u)      /* ... or this often while the log is full */
#define CKPT_IDLE_NS     (20u * 1000000u)     /* ... or once idle this long */
#define RETRY_NS         (200u * 1000000u)    /* pause before retrying a failed request */
#define TICK_MS          100u
#define STOP_REMOTE_NS   (2000u * 1000000u)   /* remote sites: bound on the stop */
#define RESYNC_QD        16u                  /* region copies in flight per site */
#define CP_GAPS          32u                  /* leg ranges per copy read asynchronously */
#define CPREAD_BIT       (1ull << 58)         /* | gen << 16 | slot: a copy's leg read */
#define RESYNC_CHUNK     (1u << 20)           /* bytes per data copy, at most */
#define RESYNC_ZERO_MAX  (1u << 30)           /* bytes per write-zeroes of a hole */
#define RESYNC_RETRY_NS  (1000ull * 1000000u) /* first pause before retrying a resync */
#define RESYNC_RETRY_MAX (60000ull * 1000000u)
#define DOUBT_GRACE_NS   (5000ull * 1000000u) /* in-doubt writes may land this late */
#define CLR_MAX          256u                 /* completed copies per checkpoint, at most */
#define DLOG_FLUSH_NS    (1000ull * 1000000u) /* resync progress to the dirty-log files */
#define FULL_GAP_NS      (500u * 1000000u)    /* pull-ahead: a full log's gaps, at most */

/* io_uring user_data tags */
#define CKPT_TAG         UINT64_MAX
#define CKPT_LEG_BIT     (1ull << 59)        /* | leg index: a leg's flush */
#define EVFD_TAG         (1ull << 61)
#define IGNORE_TAG       (1ull << 60)
#define POLL_BIT         (1ull << 62)

struct wio {
  bool active;
  uint64_t seq;
  struct leg *leg;
  int op;                          /* RL_OP_* */
  int flags;
  uint64_t off;
  uint64_t len, done;
  const uint8_t *buf;              /* payload in the log, or NULL */
  bool zerofill;                   /* zeroing unsupported: writing zeroes */
  int sync_res;                    /* threads engine: result of the call */
  /* remote legs */
  bool sent;                       /* a piece is in flight on the connection */
  bool parked;                     /* waiting for a connection or retry_at */
  uint32_t gen;                    /* connection generation of the piece */
  uint64_t sent_ns, retry_at;
  struct worker *w;
  /* resync copies (slots qd..nio-1): not log entries */
  bool copy;
  bool staged;                     /* read, waiting for the log to be durable to hold_seq */
  bool reading;                    /* its local-leg read is in flight (io_uring) */
  uint64_t hold_seq;               /* newest entry the copied data may contain */
  uint64_t first_bit, nbits;       /* dirty-log regions it covers */
};

struct ready {
  unsigned idx;
  int res;
};

struct worker {
  struct site *site;
  struct replicator *r;
  bool uring;
  struct io_uring ring;
  unsigned qd, ninflight;
  unsigned nio;                    /* qd log slots + RESYNC_QD copy slots */
  struct wio *io;
  uint8_t *cdone;                  /* per log slot: completed */
  uint64_t ndesc;
  uint64_t next;                   /* next seq to take */
  uint64_t done;                   /* every seq <= done completed */
  uint64_t posted;                 /* applied posted to the log */
  uint64_t last_ckpt_ns;
  /* An asynchronous checkpoint: flushes of the legs in flight. */
  bool ckpt_busy;
  unsigned ckpt_pending;
  uint64_t ckpt_seq;
  int ckpt_err;
  uint64_t ckpt_retry_at;
  uint64_t ckpt_count;             /* checkpoints completed */
  bool ckpt_force;                 /* flush the legs even with nothing new applied */
  /* resync */
  unsigned ncopies;
  uint8_t *cbuf[RESYNC_QD];        /* copy buffers, one per copy slot */
  uint8_t *rbuf[RESYNC_QD];        /* the local leg's bytes, read asynchronously */
  uint64_t cgaps[RESYNC_QD][CP_GAPS][2];  /* ... of which these ranges count */
  unsigned ncgaps[RESYNC_QD];
  uint32_t cgen[RESYNC_QD];        /* read generation (stale completions) */
  uint64_t cbuf_size;
  uint64_t *rs_cursor;             /* per leg: next region to look at */
  uint64_t rs_start, rs_high;      /* log-mode switch seq; newest seq a copy may hold */
  uint64_t rs_retry_at, rs_backoff_ns;
  uint64_t rs_bytes_started;       /* for the rate limit */
  bool rs_flushing;                /* copies done: the legs are being flushed */
  bool rs_resume;                  /* a resync was under way at the last stop */
  bool rs_restarted;               /* ... so copies made then may hold newer entries */
  uint64_t rs_flush_drops;         /* connection drops when the final flush started */
  bool rewind;                     /* a connection was lost: re-send what is not flushed */
  bool paused_seen;                /* the site's paused flag as last acted on */
  bool rs_want;                    /* an in-place resync was asked for (replctl) */
  uint64_t last_pick_ns;           /* site 0: last look for a site to serve a failed leg */
  /* Regions of completed copies: their bits are cleared only once a leg
   * flush covers the copies (a persistent dirty log never says "copied"
   * before the leg has it durably).  clr: since the last checkpoint
   * started; clr_ck: covered by the checkpoint under way. */
  struct clr { struct leg *leg; uint64_t first, n; } *clr, *clr_ck;
  unsigned nclr, nclr_ck;
  uint64_t dlog_flushed_ns;
  uint64_t rs_flush_from;
  uint8_t *zbuf;
  struct wio *fin;                 /* completed in this reap, not yet finished */
  unsigned nfin;
  /* completions waiting to be handled: threads engine, remote links */
  struct ready *ready;
  unsigned nready;
  /* legs of this site, and per device */
  struct leg **legs;
  unsigned nlegs, nremote;
  struct leg **leg_of_dev;
  int evfd;
  bool evfd_armed;
  uint64_t poll_gen;
  /* link health */
  uint64_t last_progress_ns, full_since_ns, last_tick_ns;
  uint64_t last_done_ns;           /* an entry last completed: the idle
                                      checkpoint's clock (the watchdog resets
                                      last_progress_ns while nothing is pending) */
  uint64_t full_last_ns;           /* the log was last seen held full by this site */
  uint64_t done_hwm;               /* highest done: entries sent again after a
                                      rewind are not progress */
  bool stop_seen;
  uint64_t stop_at;
  bool behind_reported;          /* the last site-behind / within event sent */
};

static uint64_t
mono_ns (void)
{
  return link_mono_ns ();
}

/* Time from t to now; 0 if t is later (taken after now, e.g. by a
 * completion handled since): unsigned subtraction would wrap. */
static uint64_t
since (uint64_t now, uint64_t t)
{
  return now > t ? now - t : 0;
}

/* Pause before retrying a failed local operation. */
static void
backoff (void)
{
  struct timespec ts = { 0, 200 * 1000000 };
  nanosleep (&ts, NULL);
}

static struct io_uring_sqe *
get_sqe (struct worker *w)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&w->ring);
  if (!sqe) {
    io_uring_submit (&w->ring);
    sqe = io_uring_get_sqe (&w->ring);
  }
  return sqe;
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

static void
push_ready (struct worker *w, unsigned idx, int res)
{
  w->ready[w->nready].idx = idx;
  w->ready[w->nready].res = res;
  w->nready++;
}

/* ---- remote legs --------------------------------------------------------- */

static void
remote_done (void *opaque, int res)
{
  struct wio *io = opaque;
  struct worker *w = io->w;

  if (!io->active || !io->sent || io->gen != io->leg->link.gen)
    return;                                /* an old connection's answer */
  io->sent = false;
  push_ready (w, (unsigned) (io - w->io), res);
}

static void ckpt_result (struct worker *w, int res);
static void forget_copies (struct worker *w, struct leg *l);

/* Publish what the site's legs hold: every entry <= done_seq.  Once a
 * connection is lost or a remote flush failed, only the applied sequence:
 * what the remote acknowledged since may be gone with its cache, and
 * while the entries after it are sent again, an older one lands over a
 * newer one until that is sent again too.  Clients of a sync site and
 * verify wait on it. */
static void
publish_done (struct worker *w)
{
  struct site *s = w->site;
  uint64_t v = w->rewind ? w->posted : w->done;

  if (v == __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED))
    return;
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->done_seq, v, __ATOMIC_RELAXED);   /* read without the lock too */
  if (s->sync_waiters)
    pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

static void
remote_flush_done (void *opaque, int res)
{
  struct leg_ckpt *c = opaque;
  struct leg *l = c->leg;
  struct worker *w = c->w;

  if (!l->ckpt_pending || l->ckpt_gen != l->link.gen)
    return;
  l->ckpt_pending = 0;
  if (res < 0 && !link_conn_error (res)) {
    /* The remote could not make its cache durable: what the flush was to
     * cover may be gone with it (a dropped cache, a writeback error).  Send
     * the entries after the applied sequence again (same epoch: harmless)
     * and copy the regions again, as after a lost connection. */
    errno = -res;
    __atomic_add_fetch (&l->errors, 1, __ATOMIC_RELAXED);
    if (strncmp (l->last_error, "flush: ", 7) != 0)
      rep_error ("device '%s': leg %s (site %u): flush failed: %m; its unflushed entries are "
                 "sent again and the flush retried", l->dev->name, l->link.shown, l->site);
    snprintf (l->last_error, sizeof l->last_error, "flush: %m");
    forget_copies (w, l);
    if (w->done > w->posted)
      w->rewind = true;
    __atomic_add_fetch (&w->site->legs_gen, 1, __ATOMIC_ACQ_REL);
    publish_done (w);
  }
  else if (res < 0) {
    errno = -res;
    snprintf (l->last_error, sizeof l->last_error, "flush: %m");
  }
  else if (!strncmp (l->last_error, "flush: ", 7))
    l->last_error[0] = 0;
  ckpt_result (w, res < 0 ? res : 0);
}

/* ---- the local leg out of service --------------------------------------- *
 *
 * A local leg that fails a write or a flush is taken out of service
 * (durably: RL_DEV_LOCAL_OUT in the log header) and the device is served
 * through the most up-to-date remote site: that site's worker first
 * indexes every logged entry of the device it has not applied (the read
 * index then means "not yet on the serving leg") and from then on trims
 * the index as it applies them.  Site 0 then skips the device's entries,
 * recording them in the leg's bitmap; with no remote site to serve, it
 * keeps retrying instead, so the log never drops the only copy (safety
 * rule 4).  Restore copies the device back onto the leg (the resync
 * machinery, from the device view) and hands the reads back.
 */

/* Entry seq (after done) was applied here already, out of order. */
static bool
applied_here (void *opaque, uint64_t seq)
{
  struct worker *w = opaque;
  return seq > w->done && seq < w->next && w->cdone[seq % w->ndesc];
}

/* A leg a resync copies to: at site 0 only a local leg being restored
 * (another one may be out of service, its bitmap filling up). */
static bool
resyncable (const struct leg *l)
{
  return l->site != 0 || __atomic_load_n (&l->state, __ATOMIC_RELAXED) == LEG_RESYNCING;
}

/* The entries of l's device are not written to l (a remote site serves). */
static bool
out_of_service (const struct leg *l)
{
  return l->site == 0 && l->dev->local_out && l->dev->serving != 0 &&
    __atomic_load_n (&l->state, __ATOMIC_RELAXED) == LEG_FAILED;
}

/* Writers wait a bounded time for log space while some device's entries
 * have no copy but the log's: a local leg out of service that no remote
 * site serves, and that is not a stale leg (whose writes still land). */
static void
only_copy_update (struct replicator *r)
{
  size_t i;
  bool any = false;
  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    any |= __atomic_load_n (&d->local_out, __ATOMIC_ACQUIRE) &&
      !__atomic_load_n (&d->serving, __ATOMIC_ACQUIRE) && !d->local->stale;
  }
  replog_set_only_copy_wait (r->rl, any ? r->sites[0].cfg->disconnect_timeout_ms : 0);
}

/* The local leg l failed (op, errno e): take it out of service.  True if
 * a remote site serves the device, so its entries can be skipped. */
static bool
local_fail (struct worker *w, struct leg *l, const char *op, int e)
{
  struct vdev *d = l->dev;
  unsigned srv;

  if (d->local_out && l->state == LEG_RESYNCING) {
    /* The leg being restored failed again: out of service once more. */
    rep_error ("device '%s': local leg %s failed again during its restore (%s: %s)",
               d->name, l->cfg->path, op, strerror (e));
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    bitmap_set_all (l->dirty);
    return d->serving != 0;
  }
  if (d->local_out)
    return d->serving != 0;
  __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
  pthread_mutex_lock (&d->ov_lock);
  d->local_out = true;                   /* site 0 no longer trims the index */
  pthread_mutex_unlock (&d->ov_lock);
  if (replog_change_dev_flags (w->r->rl, d->index, RL_DEV_LOCAL_OUT, 0) == -1)
    rep_error ("device '%s': could not record the failed local leg in the log header: %m",
               d->name);
  srv = vdev_pick_server (d);
  if (srv) {
    struct site *rs = &w->r->sites[srv];
    rep_event (EV_LOCAL_FAILED, 0, d->name, "local leg %s failed (%s: %s): out of service; reads "
               "and writes continue through site %u; restore it with 'replctl restore %s --from %u'",
               l->cfg->path, op, strerror (e), srv, d->name, srv);
    __atomic_fetch_or (&rs->serve_req, 1u << d->index, __ATOMIC_ACQ_REL);
    worker_poke (rs);
  }
  else {
    rep_event (EV_LOCAL_FAILED, 0, d->name, "local leg %s failed (%s: %s) and no remote site is up "
               "to date to serve the device: reads fail, writes are kept in the log until it is "
               "full (the log holds their only copy)", l->cfg->path, op, strerror (e));
    only_copy_update (w->r);
  }
  return false;            /* the takeover is asynchronous: skip from the next entry on */
}

/* A flush of path leg l failed with errno e (safety rule 13).  Linux
 * reports a writeback error once and drops the dirty pages, so a flush
 * that succeeds later proves nothing about what was written before this
 * one: every entry after the applied sequence (which did not move: the
 * log still holds them) is written again, in order (the current epoch:
 * idempotent), and the copies no flush covered are copied again (their
 * dirty bits are still set).  At site 0 the leg may have lost writes that
 * reads would find there: the device's index gets back every entry after
 * the applied sequence, and the leg is out of service (local_fail) until a
 * checkpoint flushes it again (ckpt_result). */
static void
leg_sync_failed (struct worker *w, struct leg *l, int e)
{
  struct vdev *d = l->dev;

  __atomic_add_fetch (&l->errors, 1, __ATOMIC_RELAXED);
  if (strncmp (l->last_error, "flush: ", 7) != 0)
    rep_error ("device '%s': leg %s (site %u): fdatasync failed: %s; what was written since its "
               "last good flush is written again from the log", d->name, l->cfg->path, l->site,
               strerror (e));
  snprintf (l->last_error, sizeof l->last_error, "flush: %s", strerror (e));
  forget_copies (w, l);
  w->rewind = true;
  __atomic_add_fetch (&w->site->legs_gen, 1, __ATOMIC_ACQ_REL);   /* verify looks again */
  publish_done (w);                      /* the legs hold the applied sequence, no more */
  l->sync_failed = true;
  l->written_ok = false;
  if (l->site != 0) {
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    return;
  }
  pthread_mutex_lock (&d->ov_lock);
  if (d->serving == 0 && vdev_overlay_reset (d, w->posted, NULL, NULL) == -1)
    rep_error ("device '%s': out of memory re-indexing the entries the local leg may have lost: "
               "reads may return older data until they are written again", d->name);
  pthread_mutex_unlock (&d->ov_lock);
  local_fail (w, l, "fdatasync", e);
}

/* Site 0 after a checkpoint that flushed every leg in service: a failed
 * local leg that no remote site serves, written since its failure and now
 * flushed, holds every entry again: back in service.  From now on the
 * index means "not yet on the local leg" again.  False while such a leg
 * remains (its writes still fail). */
static bool
local_back (struct worker *w)
{
  unsigned i;
  bool all = true;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    struct vdev *d = l->dev;
    if (!out_of_service (l))
      l->sync_failed = false;            /* flushed by this checkpoint, after the rewrite */
    if (l->state != LEG_FAILED || !d->local_out || l->stale ||
        __atomic_load_n (&d->serving, __ATOMIC_ACQUIRE) != 0)
      continue;
    if (!l->written_ok) {
      all = false;                       /* its writes still fail */
      continue;
    }
    pthread_mutex_lock (&d->ov_lock);
    if (d->serving != 0 || vdev_overlay_reset (d, w->done, applied_here, w) == -1) {
      pthread_mutex_unlock (&d->ov_lock);
      all &= d->serving != 0;            /* out of memory: at the next checkpoint */
      continue;
    }
    d->local_out = false;
    pthread_mutex_unlock (&d->ov_lock);
    __atomic_store_n (&l->state, LEG_REPLICATING, __ATOMIC_RELAXED);
    if (!strncmp (l->last_error, "flush: ", 7))
      l->last_error[0] = 0;
    only_copy_update (w->r);
    if (replog_change_dev_flags (w->r->rl, d->index, 0, RL_DEV_LOCAL_OUT) == -1)
      rep_error ("device '%s': could not record it in the log header: %m", d->name);
    rep_event (EV_LOCAL_BACK, 0, d->name, "local leg %s is writable and flushed again: back in "
               "service", l->cfg->path);
  }
  return all;
}

/* A remote site's worker: serve the reads of the devices in mask. */
static void
serve_take (struct worker *w, uint32_t mask)
{
  struct site *s = w->site;
  size_t i;

  for (i = 0; i < w->r->ndevs; i++) {
    struct vdev *d = &w->r->devs[i];
    if (!(mask & (1u << i)) || !w->leg_of_dev[i])
      continue;
    pthread_mutex_lock (&d->ov_lock);
    if (vdev_overlay_reset (d, w->done, applied_here, w) == -1) {
      pthread_mutex_unlock (&d->ov_lock);
      rep_error ("device '%s': site %u cannot serve it: out of memory", d->name, s->id);
      continue;
    }
    __atomic_store_n (&d->serving, s->id, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&d->ov_lock);
    __atomic_fetch_or (&s->serving_devs, 1u << i, __ATOMIC_ACQ_REL);
    only_copy_update (w->r);             /* a remote copy exists now */
    rep_event (EV_SERVED_FROM, (int) s->id, d->name, "reads are served from this site (its leg "
               "and the log entries it has not applied yet)");
  }
}

static void
disarm_poll (struct worker *w, struct leg *l)
{
  if (l->link.poll_tag && w->uring) {
    struct io_uring_sqe *sqe = get_sqe (w);
    io_uring_prep_poll_remove (sqe, l->link.poll_tag);
    io_uring_sqe_set_data64 (sqe, IGNORE_TAG);
  }
  l->link.poll_tag = 0;
}

/* Copies to l that no flush covered yet: their dirty bits stay set, so
 * they are copied again. */
static void
forget_copies (struct worker *w, struct leg *l)
{
  unsigned i, j;
  for (i = 0, j = 0; i < w->nclr; i++)
    if (w->clr[i].leg != l)
      w->clr[j++] = w->clr[i];
  w->nclr = j;
  for (i = 0, j = 0; i < w->nclr_ck; i++)
    if (w->clr_ck[i].leg != l)
      w->clr_ck[j++] = w->clr_ck[i];
  w->nclr_ck = j;
}

/* The connection of leg l is gone (or we abort it).  Park its requests
 * for re-sending; in_doubt: we aborted it while the remote may still
 * execute what it had. */
static void
link_down (struct worker *w, struct leg *l, bool in_doubt, const char *why)
{
  struct rlink *k = &l->link;
  unsigned i, ndoubt = 0;

  if (!k->up)
    return;
  __atomic_add_fetch (&w->site->legs_gen, 1, __ATOMIC_ACQ_REL);   /* verify looks again */
  if (k->ops->fenced)
    in_doubt = false;
  /* Regions in doubt: a bitmap like the dirty log's, made on first use. */
  if (in_doubt && !l->doubt) {
    /* status reads l->doubt without a lock: publish it initialised */
    __atomic_store_n (&l->doubt, bitmap_new (l->dirty->size, l->dirty->region_size), __ATOMIC_RELEASE);
  }
  if (in_doubt && !l->doubt) {
    rep_error ("%s: out of memory for the in-doubt regions: the site is not consistent until "
               "a full resync", k->what);
    __atomic_store_n (&w->site->in_doubt, true, __ATOMIC_RELAXED);
  }
  for (i = 0; i < w->nio; i++) {
    struct wio *io = &w->io[i];
    if (!io->active || io->leg != l)
      continue;
    if (io->sent && in_doubt && l->doubt && io->op != RL_OP_BARRIER) {
      bitmap_set_range (l->doubt, io->off, io->len);
      l->doubt_pending = true;
      ndoubt++;
    }
    io->sent = false;
    io->parked = true;
  }
  if (in_doubt && k->ops->abort)
    k->ops->abort (k->conn);
  k->gen++;
  __atomic_store_n (&k->up, false, __ATOMIC_RELAXED);
  k->down_since_ns = mono_ns ();
  __atomic_add_fetch (&k->drops, 1, __ATOMIC_RELAXED);
  disarm_poll (w, l);
  k->ops->close (k->conn);
  k->conn = NULL;
  if (ndoubt) {
    l->doubt_events++;
    /* Durably, before anything newer is sent: after a crash the site must
     * not claim to be a consistent prefix either. */
    if (!w->site->in_doubt &&
        replog_change_site_flags (w->r->rl, w->site->id, RL_SITE_IN_DOUBT, 0) == -1)
      rep_error ("site %u: could not record the in-doubt writes in the log header: %m",
                 w->site->id);
    __atomic_store_n (&w->site->in_doubt, true, __ATOMIC_RELAXED);
  }
  /* Copies and entries it acknowledged but no flush covered may be lost
   * with the remote's cache (a restarted server): copy those regions again
   * (their bits stay set), and re-send the entries after the applied
   * sequence (same epoch: idempotent) before the next checkpoint. */
  forget_copies (w, l);
  if (w->done > w->posted)
    w->rewind = true;
  publish_done (w);
  rlink_set_error (k, "%s", why);
  if (ndoubt)
    rep_event (EV_LINK_DOWN, (int) l->site, l->dev->name, "connection to %s dropped (%s); %u writes "
               "in flight are in doubt (the remote may still apply them): their regions are marked "
               "for resync", k->shown, why, ndoubt);
  else
    rep_event (EV_LINK_DOWN, (int) l->site, l->dev->name, "connection to %s lost (%s); "
               "reconnecting, its entries stay in the log", k->shown, why);
  if (l->ckpt_pending) {
    l->ckpt_pending = 0;
    ckpt_result (w, -ENOTCONN);
  }
  rlink_want (k);
}

static void io_issue (struct worker *w, unsigned idx);

/* Issue (or park) the next piece of a request on a remote leg. */
static void
remote_issue (struct worker *w, unsigned idx)
{
  struct wio *io = &w->io[idx];
  struct leg *l = io->leg;
  struct rlink *k = &l->link;
  uint64_t rest = io->len - io->done, now;
  int op, flags = 0, r;
  const void *src = NULL;

  if (!k->up || (io->retry_at && (now = mono_ns ()) < io->retry_at)) {
    io->parked = true;
    return;
  }
  io->parked = false;
  io->retry_at = 0;
  if (io->op == RL_OP_WRITE) {
    op = LREQ_WRITE;
    src = io->buf + io->done;
  }
  else if (io->zerofill || l->zero_refused) {
    io->zerofill = true;
    op = LREQ_WRITE;
    src = w->zbuf;
    if (rest > ZBUF_SIZE)
      rest = ZBUF_SIZE;
  }
  else {
    op = LREQ_ZERO;
    if (io->op == RL_OP_TRIM || (io->flags & RL_FLAG_MAY_TRIM))
      flags |= LREQ_MAY_TRIM;
  }
  io->gen = k->gen;
  io->sent = true;
  io->sent_ns = mono_ns ();
  r = k->ops->submit (k->conn, op, src, io->off + io->done, (uint32_t) rest, flags, remote_done, io);
  if (r == 0)
    return;
  io->sent = false;
  if (r == -EOPNOTSUPP && op == LREQ_ZERO) {
    io->zerofill = true;                 /* the remote cannot zero: write zeroes */
    remote_issue (w, idx);
    return;
  }
  push_ready (w, idx, r);
}

/* Adopt new connections, run timers, enforce deadlines, re-send parked
 * requests. */
static void
links_service (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint64_t deadline = s->cfg->request_timeout_ms * 1000000u;
  unsigned i;
  bool tick = since (now, w->last_tick_ns) >= TICK_MS * 1000000u;

  if (tick)
    w->last_tick_ns = now;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    struct rlink *k = &l->link;
    unsigned j;
    if (!l->remote)
      continue;
    if (!k->up) {
      struct link_info info;
      void *c = rlink_take (k, &info);
      if (!c)
        continue;
      k->conn = c;
      k->info = info;
      __atomic_store_n (&k->up, true, __ATOMIC_RELAXED);   /* status reads it */
      k->gen++;
      __atomic_add_fetch (&k->connects, 1, __ATOMIC_RELAXED);
      l->lbs = info.block_size;
      rep_event (EV_LINK_UP, (int) l->site, l->dev->name, "connected to %s (%s, %" PRIu64 " bytes)",
                 k->shown, k->ops->name, info.size);
    }
    if (tick && k->ops->tick (k->conn) == -1) {
      link_down (w, l, false, "connection closed");
      continue;
    }
    /* Deadlines: a request (or flush) outstanding too long. */
    for (j = 0; j < w->nio && k->up; j++) {
      struct wio *io = &w->io[j];
      if (io->active && io->leg == l && io->sent && since (now, io->sent_ns) > deadline)
        link_down (w, l, true, "no answer within request_timeout");
    }
    if (k->up && l->ckpt_pending && since (now, l->ckpt_sent_ns) > deadline)
      link_down (w, l, true, "flush not answered within request_timeout");
    if (!k->up)
      continue;
    for (j = 0; j < w->nio; j++) {
      struct wio *io = &w->io[j];
      if (io->active && io->leg == l && io->parked && (!io->retry_at || now >= io->retry_at))
        remote_issue (w, j);
    }
  }
}

static bool
links_all_up (struct worker *w)
{
  unsigned i;
  for (i = 0; i < w->nlegs; i++)
    if (w->legs[i]->remote && !w->legs[i]->link.up)
      return false;
  return true;
}

/* Arm one-shot polls for the connections (and the log's eventfd). */
static void
arm_polls (struct worker *w)
{
  unsigned i;

  if (!w->evfd_armed) {
    struct io_uring_sqe *sqe = get_sqe (w);
    io_uring_prep_poll_add (sqe, w->evfd, POLLIN);
    io_uring_sqe_set_data64 (sqe, EVFD_TAG);
    w->evfd_armed = true;
  }
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    struct rlink *k = &l->link;
    int fd = -1, ev;
    if (!l->remote || !k->up)
      continue;
    ev = k->ops->events (k->conn, &fd);
    if (k->poll_tag && (ev != k->armed_ev || fd != k->armed_fd))
      disarm_poll (w, l);
    if (!k->poll_tag && ev) {
      struct io_uring_sqe *sqe = get_sqe (w);
      k->poll_tag = POLL_BIT | ((uint64_t) i << 32) | (++w->poll_gen & 0xffffffffu);
      io_uring_prep_poll_add (sqe, fd, (unsigned) ev);
      io_uring_sqe_set_data64 (sqe, k->poll_tag);
      k->armed_fd = fd;
      k->armed_ev = ev;
    }
  }
}

static void
poll_result (struct worker *w, uint64_t tag, int res)
{
  unsigned i = (unsigned) ((tag & ~POLL_BIT) >> 32);
  struct leg *l;

  if (i >= w->nlegs)
    return;
  l = w->legs[i];
  if (!l->link.up || l->link.poll_tag != tag)
    return;                                 /* stale */
  l->link.poll_tag = 0;
  if (res <= 0)
    return;                                 /* cancelled: re-armed next round */
  if (l->link.ops->notify (l->link.conn, res) == -1)
    link_down (w, l, false, "connection closed by the remote");
}

/* ---- issuing and completing -------------------------------------------- */

/* Issue (or perform) the next piece of io. */
static void
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
  if (w->uring) {
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

static bool
overlaps_inflight (struct worker *w, const struct rl_desc *d)
{
  unsigned i;
  for (i = 0; i < w->nio; i++) {
    const struct wio *io = &w->io[i];
    if (io->active && io->leg->dev->index == d->device &&
        io->off < d->offset + d->length && d->offset < io->off + io->len)
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
  if (w->done > w->done_hwm) {           /* entries sent again are not progress */
    w->done_hwm = w->done;
    w->last_progress_ns = w->last_done_ns = mono_ns ();
  }
  publish_done (w);
}

/* An entry is on its leg.  Completions are finished in batches (see
 * finish_batch): one overlay lock per device per reap, not per entry. */
static void copy_done (struct worker *w, struct wio *io);
static void copy_read_done (struct worker *w, uint64_t tag, int res);

static void
io_complete (struct worker *w, struct wio *io)
{
  if (io->copy) {
    copy_done (w, io);
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

/* Drop the batch's entries from the read index (site 0), then count them
 * done: an entry leaves the index only once it is on the leg, and is
 * reported applied only once it left the index. */
static void
finish_batch (struct worker *w)
{
  struct vdev *locked = NULL;
  uint64_t bytes = 0;
  unsigned i;

  /* The site whose leg serves a device's reads (site 0: the local leg;
   * a remote one while the local leg is out of service) trims its index. */
  for (i = 0; i < w->nfin; i++) {
    struct vdev *d = w->fin[i].leg->dev;
    if (__atomic_load_n (&d->serving, __ATOMIC_RELAXED) != w->site->id)
      continue;
    if (d != locked) {
      if (locked)
        pthread_mutex_unlock (&locked->ov_lock);
      pthread_mutex_lock (&d->ov_lock);
      locked = d;
    }
    if (d->serving == w->site->id && !(d->serving == 0 && d->local_out))
      overlay_remove (d->ov, w->fin[i].off, w->fin[i].off + w->fin[i].len, w->fin[i].seq);
  }
  if (locked)
    pthread_mutex_unlock (&locked->ov_lock);
  for (i = 0; i < w->nfin; i++) {
    if (w->fin[i].op == RL_OP_WRITE)
      bytes += w->fin[i].len;
    mark_done (w, w->fin[i].seq);
  }
  if (bytes)
    __atomic_add_fetch (&w->site->bytes_done, bytes, __ATOMIC_RELAXED);
  w->nfin = 0;
}

/* Handle one result for io idx.  Returns true if the io needs reissuing. */
static bool
io_result (struct worker *w, unsigned idx, int res)
{
  struct wio *io = &w->io[idx];
  struct leg *l = io->leg;

  if (res == -EAGAIN || res == -EINTR)
    return true;
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
  if (res < 0) {
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
      bitmap_set_range (l->dirty, io->off, io->len);
      io_complete (w, io);
      return false;
    }
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    backoff ();                  /* the leg may come back */
    return true;
  }
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

static void
drain_ready (struct worker *w)
{
  while (w->nready) {
    struct ready rd = w->ready[--w->nready];
    if (w->io[rd.idx].active && io_result (w, rd.idx, rd.res))
      io_issue (w, rd.idx);
  }
}

static void
post (struct worker *w, uint64_t upto)
{
  struct site *s = w->site;

  if (upto > w->posted) {
    w->last_progress_ns = mono_ns ();
    replog_post_applied (w->r->rl, s->id, upto);
    w->posted = upto;
    if (!s->resyncing && !s->in_doubt) {
      /* The legs hold a state the devices had: when entry `upto` was logged. */
      const struct rl_desc *d = replog_desc (w->r->rl, upto);
      pthread_mutex_lock (&s->lock);
      s->cons_seq = upto;
      s->cons_time_ns = d->seq == upto ? d->time_ns : 0;
      s->cons_valid = true;
      pthread_mutex_unlock (&s->lock);
    }
  }
  w->last_ckpt_ns = mono_ns ();
}

/* One leg flush of an asynchronous checkpoint completed. */
static void
ckpt_result (struct worker *w, int res)
{
  unsigned i;

  if (res < 0 && !w->ckpt_err)
    w->ckpt_err = res;
  if (--w->ckpt_pending)
    return;
  w->ckpt_busy = false;
  w->ckpt_force = false;
  if (w->ckpt_err) {
    errno = -w->ckpt_err;
    if (w->site->id == 0)                /* a remote leg's: logged by remote_flush_done */
      rep_error ("site %u: flushing a leg failed: %m; applied sequence not advanced", w->site->id);
    w->ckpt_err = 0;
    w->ckpt_retry_at = mono_ns () + RETRY_NS;
    return;
  }
  if (w->site->id == 0 && !local_back (w)) {
    /* A local leg that failed and no remote site serves: the log holds
     * the only copy of what it may lack (safety rule 4), and the index
     * still refers to those entries: nothing is released. */
    w->ckpt_retry_at = mono_ns () + RETRY_NS;
    return;
  }
  w->ckpt_count++;
  for (i = 0; i < w->nclr_ck; i++)
    bitmap_clear_bits (w->clr_ck[i].leg->dirty, w->clr_ck[i].first, w->clr_ck[i].n);
  if (w->nclr_ck && since (mono_ns (), w->dlog_flushed_ns) > DLOG_FLUSH_NS) {
    /* Progress of a resync reaches the persistent dirty logs now and
     * then, so that a restart does not copy it again. */
    for (i = 0; i < w->nlegs; i++)
      if (w->legs[i]->dlog && !__atomic_load_n (&w->legs[i]->dlog_failed, __ATOMIC_ACQUIRE))
        /* A failure is not forgotten: the pages written since the file's
         * last good sync stay marked, and the syncer's next flush (before
         * any header write) reopens the file, writes them again, and
         * reports or gives up on the file. */
        (void) leg_dlog_flush (w->legs[i]);
    w->dlog_flushed_ns = mono_ns ();
  }
  w->nclr_ck = 0;
  for (i = 0; w->site->id != 0 && i < w->nlegs; i++)
    if (w->legs[i]->sync_failed) {
      w->legs[i]->sync_failed = false;   /* flushed again, after the rewrite */
      if (!strncmp (w->legs[i]->last_error, "flush: ", 7))
        w->legs[i]->last_error[0] = 0;
      if (w->legs[i]->state == LEG_FAILED && w->legs[i]->written_ok)
        __atomic_store_n (&w->legs[i]->state, LEG_REPLICATING, __ATOMIC_RELAXED);
    }
  post (w, w->ckpt_seq);
}

/* Start a checkpoint of everything completed so far (up to `upto`): the
 * flushes cover only writes that completed before they were submitted.
 * Asynchronous with io_uring and for remote legs; the threads engine
 * calls fdatasync inline. */
static void
ckpt_start (struct worker *w, uint64_t upto)
{
  unsigned i;

  if (w->ckpt_busy || (upto <= w->posted && !w->ckpt_force) || w->rewind)
    return;
  rep_debugc (REP_DBG_WORKER, "site %u: checkpoint: flushing the legs up to seq %" PRIu64,
              w->site->id, upto);
  w->ckpt_seq = upto;
  w->ckpt_err = 0;
  if (w->nclr && !w->nclr_ck) {          /* the copies completed so far */
    struct clr *t = w->clr_ck;
    w->clr_ck = w->clr;
    w->nclr_ck = w->nclr;
    w->clr = t;
    w->nclr = 0;
  }
  w->ckpt_pending = 1;                   /* held until all are submitted */
  w->ckpt_busy = true;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (out_of_service (l))
      continue;                          /* nothing of its is applied */
    if (l->remote) {
      if (!l->link.up) {
        if (!w->ckpt_err)
          w->ckpt_err = -ENOTCONN;
        continue;
      }
      l->ckpt_cb.leg = l;
      l->ckpt_cb.w = w;
      l->ckpt_pending = 1;
      l->ckpt_gen = l->link.gen;
      l->ckpt_sent_ns = mono_ns ();
      w->ckpt_pending++;
      if (l->link.ops->submit (l->link.conn, LREQ_FLUSH, NULL, 0, 0, 0, remote_flush_done,
                               &l->ckpt_cb) < 0 && l->ckpt_pending) {
        l->ckpt_pending = 0;
        ckpt_result (w, -ENOTCONN);
      }
    }
    else if (w->uring) {
      struct io_uring_sqe *sqe = get_sqe (w);
      io_uring_prep_fsync (sqe, l->fd, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data64 (sqe, CKPT_LEG_BIT | i);
      pft_sync (l->fd, 'S');
      w->ckpt_pending++;
    }
    else {
      pft_sync (l->fd, 'S');
      if (fdatasync (l->fd) == 0)
        pft_sync (l->fd, 'D');
      else {
        int e = errno;
        leg_sync_failed (w, l, e);
        if (!w->ckpt_err)
          w->ckpt_err = -e;
      }
    }
  }
  ckpt_result (w, 0);                    /* drop the hold */
}

/* Reap completions; wait up to timeout_ms for the first. */
static void
reap (struct worker *w, unsigned timeout_ms)
{
  if (w->uring) {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000,
                                    .tv_nsec = (long long) (timeout_ms % 1000) * 1000000 };
    unsigned head, n = 0;
    int r;

    if (w->nremote)
      arm_polls (w);
    r = timeout_ms || w->nready ? io_uring_submit_and_wait_timeout (&w->ring, &cqe, w->nready ? 0 : 1, &ts, NULL)
                                : io_uring_submit (&w->ring);
    if (r < 0 && r != -ETIME && r != -EINTR)
      rep_debugc (REP_DBG_WORKER, "io_uring_submit_and_wait_timeout: %s", strerror (-r));
    io_uring_for_each_cqe (&w->ring, head, cqe) {
      uint64_t tag = io_uring_cqe_get_data64 (cqe);
      int res = cqe->res;
      n++;
      if (tag == CKPT_TAG)
        ckpt_result (w, res);
      else if ((tag & (CPREAD_BIT | POLL_BIT | EVFD_TAG | IGNORE_TAG)) == CPREAD_BIT)
        copy_read_done (w, tag, res);
      else if ((tag & ~0xffffull) == CKPT_LEG_BIT) {
        if (res < 0 && (tag & 0xffff) < w->nlegs)
          leg_sync_failed (w, w->legs[tag & 0xffff], -res);
        else if (res >= 0 && (tag & 0xffff) < w->nlegs)
          pft_sync (w->legs[tag & 0xffff]->fd, 'D');
        ckpt_result (w, res);
      }
      else if (tag == EVFD_TAG) {
        uint64_t v;
        w->evfd_armed = false;
        if (read (w->evfd, &v, sizeof v) < 0) {
          /* nothing to read: fine */
        }
      }
      else if (tag & POLL_BIT)
        poll_result (w, tag, res);
      else if (tag < w->nio && w->io[tag].active && !w->io[tag].leg->remote &&
               io_result (w, (unsigned) tag, res))
        io_issue (w, (unsigned) tag);
    }
    io_uring_cq_advance (&w->ring, n);
  }
  else if (w->nremote && !w->nready) {
    /* threads engine with connections: poll() them and the eventfd */
    struct pollfd pfd[1 + 64];
    unsigned map[1 + 64], np = 0, i;
    pfd[np].fd = w->evfd;
    pfd[np].events = POLLIN;
    map[np++] = UINT32_MAX;
    for (i = 0; i < w->nlegs && np < 65; i++) {
      struct leg *l = w->legs[i];
      int fd = -1, ev;
      if (!l->remote || !l->link.up || !(ev = l->link.ops->events (l->link.conn, &fd)))
        continue;
      pfd[np].fd = fd;
      pfd[np].events = (short) ev;
      map[np++] = i;
    }
    if (poll (pfd, np, (int) timeout_ms) > 0)
      for (i = 0; i < np; i++) {
        if (!pfd[i].revents)
          continue;
        if (map[i] == UINT32_MAX) {
          uint64_t v;
          if (read (w->evfd, &v, sizeof v) < 0) {
            /* fine */
          }
        }
        else if (w->legs[map[i]]->link.up &&
                 w->legs[map[i]]->link.ops->notify (w->legs[map[i]]->link.conn, pfd[i].revents) == -1)
          link_down (w, w->legs[map[i]], false, "connection closed by the remote");
      }
  }
  drain_ready (w);
  finish_batch (w);
}

/* Queue entries up to the queue depth; stops early at a barrier that
 * needs the pipeline empty, or at an entry overlapping one in flight. */
static void
fill (struct worker *w, uint64_t durable)
{
  struct replicator *r = w->r;

  if (w->rewind) {
    /* Once what is in flight is back: start again after the applied
     * sequence.  A checkpoint under way may have been submitted on the
     * lost connection: its result does not count (ckpt_result). */
    if (w->ninflight || w->ckpt_busy)
      return;
    memset (w->cdone, 0, w->ndesc);
    w->next = w->posted + 1;
    w->done = w->posted;
    w->rewind = false;
    rep_debugc (REP_DBG_WORKER, "site %u: re-sending from seq %" PRIu64 " (after a lost connection)",
                w->site->id, w->next);
  }

  while (w->ninflight < w->qd && w->next <= durable) {
    const struct rl_desc *d = replog_desc (r->rl, w->next);
    struct leg *l;
    unsigned idx;

    if (d->op == RL_OP_BARRIER) {
      if (w->ninflight || w->ckpt_busy || w->done != w->next - 1)
        return;                          /* epoch k must complete first */
      /* Epoch boundary: flush the legs, the header records applied >= the
       * barrier, and only then does epoch k+1 start here.  On failure we
       * stay before the barrier and try again. */
      if (w->posted < w->next) {
        if (mono_ns () >= w->ckpt_retry_at)
          ckpt_start (w, w->next);
        if (w->posted < w->next)
          return;                        /* the flush is under way */
      }
      if (replog_wait_applied (r->rl, w->site->id, w->next) == -1) {
        w->ckpt_retry_at = mono_ns () + RETRY_NS;
        return;
      }
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      rep_debugc (REP_DBG_WORKER, "site %u: epoch boundary at seq %" PRIu64 " crossed",
                  w->site->id, w->next - 1);
      continue;
    }
    l = w->leg_of_dev[d->device];
    if (l && out_of_service (l)) {
      bitmap_set_range (l->dirty, d->offset, d->length);
      l = NULL;                          /* the leg misses it (restore copies it) */
    }
    if (!l) {                            /* no leg of this device here */
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      continue;
    }
    if (overlaps_inflight (w, d))
      return;
    for (idx = 0; idx < w->qd && w->io[idx].active; idx++)
      ;
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

/* ---- link health (remote sites) ---------------------------------------- */

static void
set_disconnected (struct site *s, bool v)
{
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->disconnected, v, __ATOMIC_RELAXED);
  if (v) {
    __atomic_add_fetch (&s->disconnects, 1, __ATOMIC_RELAXED);
    s->catching_up = false;
  }
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

/* Move the site to dirty-log mode (pull-ahead): from now on its missing
 * entries go to its legs' dirty logs as they leave the log. */
static void
go_dirty (struct worker *w, const char *why)
{
  struct site *s = w->site;
  unsigned i;

  rep_event (EV_SITE_DIRTY, (int) s->id, NULL, "%s: moving it to dirty-log mode; the log releases "
             "its entries and records their regions in the legs' dirty logs (the site needs a "
             "resync)", why);
  if (replog_set_site_dirty (w->r->rl, s->id) == -1) {
    rep_error ("site %u: could not record dirty-log mode in the log header: %m", s->id);
    return;
  }
  /* Forget what was in flight: it is covered by the dirty logs (every
   * entry after the site's recorded applied seq is). */
  for (i = 0; i < w->nio; i++)
    if (w->io[i].active) {
      w->io[i].active = false;
      w->io[i].sent = false;
    }
  w->ninflight = 0;
  w->ncopies = 0;
  w->nclr = w->nclr_ck = 0;              /* their bits stay set */
  w->rs_flushing = false;
  for (i = 0; i < w->nlegs; i++)
    if (w->legs[i]->remote) {
      struct leg *l = w->legs[i];
      l->link.gen++;                     /* ignore late answers */
      if (l->ckpt_pending) {             /* a flush's too: it will not end the checkpoint */
        l->ckpt_pending = 0;
        ckpt_result (w, -ENOTCONN);
      }
    }
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->dirty, true, __ATOMIC_RELAXED);
  __atomic_add_fetch (&s->legs_gen, 1, __ATOMIC_ACQ_REL);
  if (s->resyncing) {
    /* Back off before the next try (hysteresis: a slow link does not
     * flip between the modes). */
    __atomic_store_n (&s->resyncing, false, __ATOMIC_RELAXED);
    w->rs_backoff_ns = w->rs_backoff_ns ? w->rs_backoff_ns * 2 : RESYNC_RETRY_NS;
    if (w->rs_backoff_ns > RESYNC_RETRY_MAX)
      w->rs_backoff_ns = RESYNC_RETRY_MAX;
  }
  w->rs_retry_at = mono_ns () + (w->rs_backoff_ns ? w->rs_backoff_ns : RESYNC_RETRY_NS);
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

static void
watchdog (struct worker *w, uint64_t now, uint64_t durable)
{
  struct site *s = w->site;
  uint64_t timeout = s->cfg->disconnect_timeout_ms * 1000000u;
  bool up = links_all_up (w);
  bool pending = durable > w->done || w->ninflight;

  if ((!pending && up) || w->paused_seen)
    w->last_progress_ns = now;
  if (!s->disconnected && since (now, w->last_progress_ns) > timeout) {
    rep_event (EV_SITE_DISCONNECTED, (int) s->id, NULL, "disconnected (%s for %" PRIu64 " ms); "
               "clients no longer wait for it, its entries stay in the log",
               up ? "no progress" : "link down", s->cfg->disconnect_timeout_ms);
    set_disconnected (s, true);
  }
  else if (s->disconnected && up && !w->paused_seen &&
           since (now, w->last_progress_ns) < TICK_MS * 1000000u) {
    rep_event (EV_SITE_BACK, (int) s->id, NULL, "back; catching up with %" PRIu64 " entries "
               "from the log", durable > w->done ? durable - w->done : 0);
    pthread_mutex_lock (&s->lock);
    __atomic_store_n (&s->disconnected, false, __ATOMIC_RELAXED);
    s->catching_up = true;
    pthread_mutex_unlock (&s->lock);
  }
  /* Over the fall_behind threshold (clients wait for the site) or back
   * under it: one event per change. */
  {
    bool over = !__atomic_load_n (&s->dirty, __ATOMIC_RELAXED) &&
      __atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) != FB_NONE && site_over_threshold (s, durable);
    if (over != w->behind_reported) {
      w->behind_reported = over;
      if (over)
        rep_event (EV_SITE_BEHIND, (int) s->id, NULL, "over its fall_behind threshold: clients "
                   "wait for it (%" PRIu64 " entries behind)", durable > w->done ? durable - w->done : 0);
      else
        rep_event (EV_SITE_WITHIN, (int) s->id, NULL, "back within its fall_behind threshold");
    }
  }
  if (s->catching_up && durable - w->done <= w->qd) {
    rep_event (EV_SITE_CAUGHT_UP, (int) s->id, NULL, "caught up");
    pthread_mutex_lock (&s->lock);
    s->catching_up = false;
    pthread_mutex_unlock (&s->lock);
  }
  /* Pull-ahead: the log is full and this site holds it.  A slow site
   * releases an entry now and then, a waiting writer takes the space and
   * waits again at once: the log counts as kept full across such short
   * gaps, else a site that is slow but not stopped would hold writers
   * back at its pace for ever. */
  if (replog_site_holds_full_log (w->r->rl, s->id) &&
      !__atomic_load_n (&s->serving_devs, __ATOMIC_ACQUIRE)) {
    if (!w->full_since_ns)
      w->full_since_ns = now;
    w->full_last_ns = now;
    if (s->disconnected)
      go_dirty (w, "the log is full and the site is disconnected");
    else if (since (now, w->full_since_ns) > s->cfg->pull_ahead_ms * 1000000u)
      go_dirty (w, "the site kept the log full for longer than pull_ahead");
    if (__atomic_load_n (&s->dirty, __ATOMIC_RELAXED))
      w->full_since_ns = 0;              /* after a resync, the clock starts again */
  }
  else if (since (now, w->full_last_ns) > FULL_GAP_NS)
    w->full_since_ns = 0;
}

/* ---- resync ------------------------------------------------------------ *
 *
 * A dirty-mode site whose links are up goes back to log mode at an exact
 * point of the log's append order (replog_site_resume): entries from
 * rs_start on reach it from the log, in order, as usual; everything it
 * missed before is in its legs' dirty logs (released entries, plus the
 * entries still in the log, marked at the switch).  Those regions are
 * copied from the device view (local leg + unapplied entries) while the
 * log keeps flowing:
 *   - copies start once every entry before rs_start is durable (so the
 *     device view has them all);
 *   - a copy and a log write never overlap on a leg: log entries wait for
 *     a copy of their range, a copy waits for log writes in flight there
 *     (DESIGN 5.1 rule 6: a copy never overwrites newer data);
 *   - the data read may contain entries up to hold_seq (the newest
 *     reserved when it was read): the copy goes out only once the log is
 *     durable that far (rule 3), and the leg is a consistent prefix again
 *     only once the log has been applied there up to every copy's
 *     hold_seq (rs_high);
 *   - a region's bit is cleared when its copy completed; holes of the
 *     device (no unapplied entry, no data in the local leg file) go as
 *     write-zeroes, many regions at once;
 *   - done: no bit left, no copy in flight, applied >= rs_high, then a
 *     flush of the legs, then the header drops RL_SITE_RESYNC.
 * If the site falls back to dirty mode meanwhile (pull-ahead), copies in
 * flight are forgotten (their bits are still set) and the next try waits
 * longer each time.
 */

static void
resync_mark (void *opaque, uint32_t sites, const struct rl_desc *d)
{
  struct worker *w = opaque;
  struct leg *l;
  (void) sites;
  if (d->device < w->r->ndevs && (l = w->leg_of_dev[d->device]) && l->dirty)
    bitmap_set_range (l->dirty, d->offset, d->length);
}

static void
resync_free_buffers (struct worker *w)
{
  unsigned i;
  for (i = 0; i < RESYNC_QD; i++) {
    free (w->cbuf[i]);
    free (w->rbuf[i]);
    w->cbuf[i] = w->rbuf[i] = NULL;
  }
}

static void
resync_begin (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint64_t start, total = 0, region = RESYNC_CHUNK;
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    /* In-doubt regions are copied too, once writes of the aborted
     * connection can no longer land (else at the end, see resync_step). */
    if (l->doubt && since (now, l->link.down_since_ns) > DOUBT_GRACE_NS) {
      bitmap_merge (l->dirty, l->doubt);
      l->doubt_pending = false;
    }
    if (l->cfg->dirty_log.type == DIRTYLOG_NOLOG)
      bitmap_set_all (l->dirty);         /* no record: everything is copied */
    if (l->dirty->region_size > region)
      region = l->dirty->region_size;
  }
  w->cbuf_size = region;
  for (i = 0; i < RESYNC_QD; i++)
    if ((!w->cbuf[i] && posix_memalign ((void **) &w->cbuf[i], 4096, (size_t) w->cbuf_size) != 0) ||
        (!w->rbuf[i] && posix_memalign ((void **) &w->rbuf[i], 4096, (size_t) w->cbuf_size) != 0)) {
      w->cbuf[i] = NULL;
      rep_error ("site %u: resync: out of memory", s->id);
      resync_free_buffers (w);
      w->rs_retry_at = now + RESYNC_RETRY_MAX;
      return;
    }
  if (!s->dirty) {
    /* In log mode already (in-doubt regions, a full resync, a restart):
     * the header says so before anything is copied, so that a restart
     * does not take the site for consistent. */
    start = w->next;
    if (s->id && !(replog_site_flags (w->r->rl, s->id) & RL_SITE_RESYNC) &&
        replog_change_site_flags (w->r->rl, s->id, RL_SITE_RESYNC, 0) == -1) {
      rep_error ("site %u: resync: could not record it in the log header: %m", s->id);
      w->rs_retry_at = now + RESYNC_RETRY_MAX;
      return;
    }
  }
  else if (replog_site_resume (w->r->rl, s->id, resync_mark, w, &start) == -1) {
    rep_error ("site %u: resync: could not switch the site back to log mode: %m", s->id);
    w->rs_retry_at = now + RESYNC_RETRY_MAX;
    return;
  }
  else {
    memset (w->cdone, 0, w->ndesc);
    w->next = start;
    w->done = w->posted = w->done_hwm = start - 1;
    w->last_ckpt_ns = now;
    /* Fed from start on: the entries before it are the copies' to bring
     * (go_dirty forgot what was in flight), so the legs count as holding
     * start - 1.  In place, done_seq stays as publish_done keeps it: the
     * entries in flight (done < seq < next) are not on the legs yet and
     * the clients of a sync site wait for them (DESIGN 3.3). */
    publish_done (w);
  }
  w->rs_start = start;
  w->rs_high = start - 1;
  if (w->rs_restarted) {
    /* Copies made before the restart may hold entries up to the newest
     * one recovered (none was shipped beyond what was durable). */
    struct replog_stats st;
    replog_get_stats (w->r->rl, &st);
    w->rs_high = st.next_seq - 1;
    w->rs_restarted = false;
  }
  w->rs_flushing = false;
  w->rs_bytes_started = 0;
  w->last_progress_ns = now;
  for (i = 0; i < w->nlegs; i++) {
    w->rs_cursor[i] = 0;
    if (resyncable (w->legs[i]))
      total += bitmap_count (w->legs[i]->dirty);
  }
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->dirty, false, __ATOMIC_RELAXED);
  __atomic_store_n (&s->disconnected, false, __ATOMIC_RELAXED);
  s->catching_up = false;
  __atomic_store_n (&s->resyncing, true, __ATOMIC_RELAXED);
  __atomic_add_fetch (&s->legs_gen, 1, __ATOMIC_ACQ_REL);
  s->cons_valid = false;                 /* copies make it a mix of states */
  __atomic_store_n (&s->resync_regions, total, __ATOMIC_RELAXED);
  s->resync_copied = 0;
  s->resync_bytes = s->resync_zero_bytes = 0;
  s->resync_started_ns = now;
  if (s->dirty)                          /* fed from the log again from start on */
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
  return false;
}

static unsigned
leg_copies (struct worker *w, const struct leg *l)
{
  unsigned i, n = 0;
  for (i = w->qd; i < w->nio; i++)
    n += w->io[i].active && w->io[i].leg == l;
  return n;
}

/* Start one copy from leg index li.  false when that leg has nothing to
 * start now. */
static bool
copy_start (struct worker *w, unsigned li, unsigned slot, uint64_t durable)
{
  struct leg *l = w->legs[li];
  struct vdev *d = l->dev;
  struct bitmap *b = l->dirty;
  uint64_t rs = b->region_size, bit, n, off, len, hole, max_bits;
  struct replog_stats st;
  struct wio *io = &w->io[slot];
  bool zero, reading;

  if (!resyncable (l))
    return false;
  for (;;) {
    bit = bitmap_next_set (b, w->rs_cursor[li]);
    if (bit < b->nbits)
      break;
    /* End of the bitmap: start over once this pass's copies are back
     * (their bits are still set until they complete). */
    if (w->rs_cursor[li] == 0 || leg_copies (w, l) || w->nclr || w->nclr_ck)
      return false;
    w->rs_cursor[li] = 0;
  }
  /* A run of dirty regions: as long as a hole allows, else one chunk. */
  max_bits = RESYNC_ZERO_MAX / rs ? RESYNC_ZERO_MAX / rs : 1;
  for (n = 1; n < max_bits && bitmap_test (b, bit + n); n++)
    ;
  off = bit * rs;
  len = n * rs;
  if (off + len > d->size)
    len = d->size - off;
  hole = rdev_hole_end (d, off, len);
  zero = hole >= off + rs || hole == d->size;
  if (zero) {
    if (hole < off + len) {
      n = (hole - off) / rs ? (hole - off) / rs : 1;
      len = n * rs;
      if (off + len > d->size)
        len = d->size - off;
    }
  }
  else {
    uint64_t k;
    n = n < w->cbuf_size / rs ? n : (w->cbuf_size / rs ? w->cbuf_size / rs : 1);
    /* Stop the data run at a region that is all hole: it goes as zeroes. */
    for (k = 1; k < n; k++)
      if (rdev_hole_end (d, off + k * rs, rs) >= off + (k + 1) * rs)
        break;
    n = k;
    len = n * rs < d->size - off ? n * rs : d->size - off;
  }
  w->rs_cursor[li] = bit + n;
  if (copy_overlaps (w, l, off, len))
    return false;                        /* a log write is there: on a later pass */
  reading = false;
  if (!zero) {
    unsigned k = slot - w->qd;
    /* The unapplied entries now, the local leg's bytes asynchronously
     * (after: see rdev_read_view); else all of it synchronously. */
    if (w->uring && len % d->local->lbs == 0 &&
        rdev_view_overlay (d, w->cbuf[k], (uint32_t) len, off, w->cgaps[k], CP_GAPS, &w->ncgaps[k]) == 0) {
      if (w->ncgaps[k]) {
        struct io_uring_sqe *sqe = get_sqe (w);
        w->cgen[k]++;
        io_uring_prep_read (sqe, d->local->fd, w->rbuf[k], (unsigned) len, off);
        io_uring_sqe_set_data64 (sqe, CPREAD_BIT | ((uint64_t) (w->cgen[k] & 0xffffff) << 16) | slot);
        reading = true;
      }
    }
    else if (rdev_read_view (d, w->cbuf[k], (uint32_t) len, off) == -1) {
      snprintf (l->last_error, sizeof l->last_error, "resync: reading the device at %" PRIu64 ": %m", off);
      w->rs_cursor[li] = bit;            /* try again on the next pass */
      return false;
    }
  }
  replog_get_stats (w->r->rl, &st);
  *io = (struct wio) {
    .active = true, .leg = l, .copy = true, .staged = true, .reading = reading,
    .op = zero ? RL_OP_ZERO : RL_OP_WRITE, .flags = zero ? RL_FLAG_MAY_TRIM : 0,
    .off = off, .len = len, .buf = zero ? NULL : w->cbuf[slot - w->qd],
    .hold_seq = st.next_seq - 1, .first_bit = bit, .nbits = n, .w = w,
  };
  if (io->hold_seq > w->rs_high)
    w->rs_high = io->hold_seq;
  w->ncopies++;
  if (!zero)
    w->rs_bytes_started += len;
  rep_debugc (REP_DBG_RESYNC, "site %u: resync: device '%s' %s %" PRIu64 "+%" PRIu64, w->site->id,
              d->name, zero ? "zeroes" : "copies", off, len);
  if (!reading && durable >= io->hold_seq) {
    io->staged = false;
    io_issue (w, slot);
  }
  return true;
}

/* A copy's asynchronous read of the local leg completed. */
static void
copy_read_done (struct worker *w, uint64_t tag, int res)
{
  unsigned slot = (unsigned) (tag & 0xffff), k, i;
  struct wio *io;
  struct replog_stats st;

  if (slot < w->qd || slot >= w->nio)
    return;
  io = &w->io[slot];
  k = slot - w->qd;
  if (!io->active || !io->copy || !io->reading || ((tag >> 16) & 0xffffff) != (w->cgen[k] & 0xffffff))
    return;                              /* a forgotten copy's */
  if (res == (int) io->len)
    for (i = 0; i < w->ncgaps[k]; i++)
      memcpy (w->cbuf[k] + (w->cgaps[k][i][0] - io->off), w->rbuf[k] + (w->cgaps[k][i][0] - io->off),
              w->cgaps[k][i][1] - w->cgaps[k][i][0]);
  else if (rdev_read_view (io->leg->dev, w->cbuf[k], (uint32_t) io->len, io->off) == -1) {
    /* Not copied: its bits stay set, a later pass takes it again. */
    snprintf (io->leg->last_error, sizeof io->leg->last_error,
              "resync: reading the device at %" PRIu64 ": %m", io->off);
    io->active = false;
    w->ncopies--;
    return;
  }
  io->reading = false;
  replog_get_stats (w->r->rl, &st);      /* the newest entry the bytes may hold */
  io->hold_seq = st.next_seq - 1;
  if (io->hold_seq > w->rs_high)
    w->rs_high = io->hold_seq;
}

static void
copy_done (struct worker *w, struct wio *io)
{
  struct site *s = w->site;

  w->clr[w->nclr++] = (struct clr) { io->leg, io->first_bit, io->nbits };
  io->active = false;
  w->ncopies--;
  w->last_progress_ns = mono_ns ();
  __atomic_add_fetch (&s->resync_copied, io->nbits, __ATOMIC_RELAXED);
  if (io->op == RL_OP_WRITE)
    __atomic_add_fetch (&s->resync_bytes, io->len, __ATOMIC_RELAXED);
  else
    __atomic_add_fetch (&s->resync_zero_bytes, io->len, __ATOMIC_RELAXED);
}

static bool
rate_allows (struct worker *w, uint64_t now)
{
  uint64_t rate = w->site->cfg->resync_rate;
  uint64_t elapsed_ms = since (now, w->site->resync_started_ns) / 1000000u;
  return !rate || w->rs_bytes_started <= rate * elapsed_ms / 1000u + RESYNC_CHUNK;
}

/* Site 0: restored local legs go back into service. */
static void
restore_finish (struct worker *w)
{
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    struct vdev *d = l->dev;
    unsigned from = d->serving;
    if (l->state != LEG_RESYNCING)
      continue;
    /* From now on the index means "not yet on the local leg" again. */
    pthread_mutex_lock (&d->ov_lock);
    if (vdev_overlay_reset (d, w->done, applied_here, w) == -1) {
      pthread_mutex_unlock (&d->ov_lock);
      rep_error ("device '%s': restore: out of memory; retrying", d->name);
      return;
    }
    __atomic_store_n (&d->serving, 0, __ATOMIC_RELEASE);
    d->local_out = false;
    pthread_mutex_unlock (&d->ov_lock);
    if (from)
      __atomic_fetch_and (&w->r->sites[from].serving_devs, ~(1u << d->index), __ATOMIC_ACQ_REL);
    if (replog_change_dev_flags (w->r->rl, d->index, 0, RL_DEV_LOCAL_OUT) == -1)
      rep_error ("device '%s': could not record the restored local leg in the log header: %m",
                 d->name);
    __atomic_store_n (&l->state, LEG_REPLICATING, __ATOMIC_RELAXED);
    l->last_error[0] = 0;
    l->stale = false;
    l->sync_failed = false;
    rep_event (EV_LOCAL_BACK, 0, d->name, "local leg %s restored from site %u: back in service",
               l->cfg->path, from);
  }
}

static void
resync_finish (struct worker *w)
{
  struct site *s = w->site;
  double secs = (double) since (mono_ns (), s->resync_started_ns) / 1e9;
  unsigned i;

  if (s->id == 0)
    restore_finish (w);
  else if (replog_change_site_flags (w->r->rl, s->id, 0, RL_SITE_RESYNC | RL_SITE_IN_DOUBT) == -1) {
    rep_error ("site %u: resync: could not record its end in the log header: %m", s->id);
    return;
  }
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->resyncing, false, __ATOMIC_RELAXED);
  __atomic_store_n (&s->in_doubt, false, __ATOMIC_RELAXED);   /* status reads these */
  __atomic_add_fetch (&s->resyncs, 1, __ATOMIC_RELAXED);
  if (s->id) {
    /* Consistent again: at the applied seq, which covers every copy. */
    const struct rl_desc *d = replog_desc (w->r->rl, w->posted);
    s->cons_seq = w->posted;
    s->cons_time_ns = d->seq == w->posted ? d->time_ns : 0;
    s->cons_valid = true;
  }
  pthread_mutex_unlock (&s->lock);
  for (i = 0; i < w->nlegs; i++)
    __atomic_store_n (&w->legs[i]->initial_sync, false, __ATOMIC_RELAXED);
  w->rs_backoff_ns = 0;
  w->rs_flushing = false;
  resync_free_buffers (w);
  rep_event (EV_RESYNC_FINISHED, (int) s->id, NULL, "resync finished: %" PRIu64 " regions, %"
             PRIu64 " MiB of data and %" PRIu64 " MiB of zeroes in %.1f s; the site is consistent "
             "again", s->resync_copied, s->resync_bytes >> 20, s->resync_zero_bytes >> 20, secs);
}

/* A site in log mode with in-doubt regions (an aborted connection):
 * once the grace period is over, copy them again; or a full resync was
 * asked for.  An in-place resync: the site stays in log mode. */
static void
doubt_check (struct worker *w, uint64_t now)
{
  unsigned i;
  if (w->site->resyncing)
    return;
  if (w->rs_want) {
    w->rs_want = false;
    resync_begin (w, now);
    return;
  }
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (l->doubt_pending && l->link.up && since (now, l->link.down_since_ns) > DOUBT_GRACE_NS) {
      rep_info ("site %u: copying the regions of in-doubt writes again", w->site->id);
      resync_begin (w, now);
      return;
    }
  }
}

/* Site 0: restore the local legs of the devices in mask (replctl
 * restore): the leg opened again, every region copied from the device
 * view (the serving site's leg and the log), new entries applied to it. */
static void
restore_begin (struct worker *w, uint64_t now, uint32_t mask)
{
  unsigned i;
  bool any = false;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (!(mask & (1u << l->dev->index)) || l->reopen_fd < 0)
      continue;
    close (l->fd);                       /* drops our lock on it ... */
    l->fd = l->reopen_fd;
    l->reopen_fd = -1;
    if (!l->is_blk && flock (l->fd, LOCK_EX | LOCK_NB) == -1)   /* ... taken on the new one */
      rep_warn ("device '%s': local leg %s: cannot lock it again (%m): another program may "
                "open it", l->dev->name, l->cfg->path);
    l->direct = (fcntl (l->fd, F_GETFL) & O_DIRECT) != 0;
    l->zero_range_ok = l->punch_ok = true;
    bitmap_set_all (l->dirty);
    __atomic_store_n (&l->state, LEG_RESYNCING, __ATOMIC_RELAXED);
    w->rs_cursor[i] = 0;
    any = true;
    rep_event (EV_RESTORE_STARTED, 0, l->dev->name, "restoring the local leg %s from site %u",
               l->cfg->path, l->dev->serving);
  }
  if (!any)
    return;
  if (w->site->resyncing)
    __atomic_add_fetch (&w->site->resync_regions, 0, __ATOMIC_RELAXED);
  else
    resync_begin (w, now);
}

/* Requests from the administrator (replctl resync, pause, resume). */
static void
requests_check (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint32_t full = __atomic_exchange_n (&s->resync_full_devs, 0, __ATOMIC_ACQ_REL);
  uint32_t serve = __atomic_exchange_n (&s->serve_req, 0, __ATOMIC_ACQ_REL);
  bool asap = __atomic_exchange_n (&s->resync_now, false, __ATOMIC_ACQ_REL);
  bool paused = __atomic_load_n (&s->paused, __ATOMIC_ACQUIRE);
  unsigned i;

  if (serve)
    serve_take (w, serve);
  if (paused != w->paused_seen) {
    w->paused_seen = paused;
    if (paused) {
      rep_event (EV_SITE_PAUSED, (int) s->id, NULL, "paused by the administrator: not fed from "
                 "the log, clients do not wait for it; its entries stay in the log");
      if (!s->disconnected)
        set_disconnected (s, true);
    }
    else {
      rep_event (EV_SITE_RESUMED, (int) s->id, NULL, "resumed");
      w->last_progress_ns = now;
    }
  }
  if (full) {
    uint64_t n = 0;
    for (i = 0; i < w->nlegs; i++)
      if (full & (1u << w->legs[i]->dev->index)) {
        bitmap_set_all (w->legs[i]->dirty);
        w->rs_cursor[i] = 0;
        n += w->legs[i]->dirty->nbits;
      }
    if (s->resyncing)
      __atomic_add_fetch (&s->resync_regions, n, __ATOMIC_RELAXED);
    else if (!s->dirty)
      w->rs_want = true;                 /* in place: the site stays in log mode */
  }
  if ((asap || full) && s->dirty) {
    w->rs_retry_at = 0;
    w->rs_backoff_ns = 0;
  }
  else if (asap && !s->resyncing)
    w->rs_want = true;                   /* regions marked in log mode (verify --mark) */
}

/* One step of a resync: start copies, release staged ones, finish. */
static void
resync_step (struct worker *w, uint64_t now, uint64_t durable)
{
  struct site *s = w->site;
  unsigned slot, i, tries;
  bool any = false;

  if (!s->resyncing || durable + 1 < w->rs_start)
    return;
  for (slot = w->qd; slot < w->nio; slot++) {
    struct wio *io = &w->io[slot];
    if (io->active && io->staged && !io->reading && durable >= io->hold_seq) {
      io->staged = false;
      io_issue (w, slot);
    }
  }
  if (w->rs_flushing) {
    uint64_t drops = 0;
    bool more = false;
    for (i = 0; i < w->nlegs; i++) {
      struct leg *l = w->legs[i];
      drops += l->link.drops;
      more |= (resyncable (l) && bitmap_next_set (l->dirty, 0) < l->dirty->nbits) ||
        (l->doubt && bitmap_next_set (l->doubt, 0) < l->doubt->nbits);
    }
    if (more || drops != w->rs_flush_drops || w->rewind) {
      w->rs_flushing = false;            /* new work came in (resync --full, a drop) */
      return;
    }
    if (w->ckpt_count > w->rs_flush_from)
      resync_finish (w);
    else if (!w->ckpt_busy && now >= w->ckpt_retry_at) {
      w->ckpt_force = true;                /* a failed flush: again */
      ckpt_start (w, w->done);
    }
    return;
  }
  if (!links_all_up (w))
    return;
  /* Completed copies count as copied once a leg flush covers them. */
  if ((w->nclr >= CLR_MAX - RESYNC_QD || (w->nclr && !w->ncopies)) && !w->ckpt_busy &&
      now >= w->ckpt_retry_at) {
    w->ckpt_force = true;
    ckpt_start (w, w->done);
  }
  for (tries = 0; tries < w->nlegs && w->ncopies < RESYNC_QD && rate_allows (w, now) &&
                  w->nclr + w->ncopies < CLR_MAX; ) {
    unsigned li = (unsigned) ((w->rs_cursor[w->nlegs] + tries) % w->nlegs);
    for (slot = w->qd; slot < w->nio && w->io[slot].active; slot++)
      ;
    if (copy_start (w, li, slot, durable)) {
      any = true;
      w->rs_cursor[w->nlegs] = li + 1;     /* round robin over the legs */
      tries = 0;
      continue;
    }
    tries++;
  }
  if (any || w->ncopies || w->nclr || w->nclr_ck || w->done < w->rs_high)
    return;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (resyncable (l) && bitmap_next_set (l->dirty, 0) < l->dirty->nbits)
      return;
    /* Writes of an aborted connection may still land: copy those regions
     * again once they can no longer. */
    if (l->doubt && bitmap_next_set (l->doubt, 0) < l->doubt->nbits) {
      if (since (now, l->link.down_since_ns) > DOUBT_GRACE_NS && l->link.up) {
        bitmap_merge (l->dirty, l->doubt);
        l->doubt_pending = false;
        w->rs_cursor[i] = 0;
      }
      return;
    }
  }
  /* Every region copied and the log applied past every copy's data:
   * flush the copies to stable storage before the header says so. */
  w->rs_flushing = true;
  w->rs_flush_from = w->ckpt_count;
  w->rs_flush_drops = 0;
  for (i = 0; i < w->nlegs; i++)
    w->rs_flush_drops += w->legs[i]->link.drops;
  if (!w->ckpt_busy) {
    w->ckpt_force = true;
    ckpt_start (w, w->done);
  }
  else
    w->rs_flush_from = w->ckpt_count + 1;  /* the one under way may predate the copies */
}

/* ---- the thread --------------------------------------------------------- */

static bool
want_ckpt (struct worker *w, uint64_t now, uint64_t durable)
{
  uint64_t age = since (now, w->last_ckpt_ns);
  if (w->done <= w->posted || w->ckpt_busy || now < w->ckpt_retry_at || w->rewind)
    return false;
  if (w->ninflight == 0 && w->next > durable)
    /* Idle: not at once, which would cost a leg flush and a header write
     * per request at low queue depths (and delay a sync write's own log
     * sync behind a header round). */
    return since (now, w->last_done_ns) >= CKPT_IDLE_NS || w->stop_at ||
      replog_space_wanted (w->r->rl);
  return age > CKPT_INTERVAL_NS || w->done - w->posted > w->ndesc / 4 ||
    (age > CKPT_FULL_NS && replog_space_wanted (w->r->rl));
}

static void
final_report (struct worker *w)
{
  struct replog_stats st;
  replog_get_stats (w->r->rl, &st);
  if (st.committed_seq > w->done && !w->site->dirty)
    rep_warn ("site %u: stopped with %" PRIu64 " entries not yet applied; they stay in the "
              "log and are replayed at the next start", w->site->id, st.committed_seq - w->done);
}

/* Sites with connections: one loop around the ring, woken by completions,
 * polls, the log's eventfd and a 100 ms tick. */
static void
remote_loop (struct worker *w)
{
  struct replicator *r = w->r;

  for (;;) {
    uint64_t now = mono_ns ();
    bool stopping = __atomic_load_n (&r->stop, __ATOMIC_ACQUIRE);
    uint64_t durable = replog_wait_work (r->rl, w->next - 1, 0);

    links_service (w, now);
    if (stopping) {
      if (!w->stop_at)
        w->stop_at = now + STOP_REMOTE_NS;
      if (w->site->dirty || now > w->stop_at ||
          (w->ninflight == 0 && !w->ckpt_busy && (w->done <= w->posted || !links_all_up (w))))
        break;
    }
    if (w->rs_resume && !stopping) {
      w->rs_resume = false;
      resync_begin (w, now);
    }
    requests_check (w, now);
    if (!w->site->dirty) {
      if (!stopping && !w->paused_seen)
        fill (w, durable);
      if (want_ckpt (w, now, durable) || (stopping && w->ninflight == 0 && !w->ckpt_busy &&
                                          w->done > w->posted && now >= w->ckpt_retry_at))
        ckpt_start (w, w->done);
      watchdog (w, now, durable);
      if (!stopping && !w->site->dirty && !w->paused_seen) {
        resync_step (w, now, durable);
        doubt_check (w, now);
      }
    }
    else if (!stopping && !w->paused_seen && now >= w->rs_retry_at && links_all_up (w))
      resync_begin (w, now);
    reap (w, w->nready ? 0 : TICK_MS);
  }
}

/* Sites with path legs only (the local site): the loop as tuned for the
 * local leg. */
static void
local_loop (struct worker *w)
{
  struct replicator *r = w->r;

  for (;;) {
    uint64_t durable = replog_wait_work (r->rl, w->next - 1, 0);
    bool stopping = __atomic_load_n (&r->stop, __ATOMIC_ACQUIRE);
    uint64_t now = mono_ns ();

    if (stopping) {
      if (!w->stop_at)
        w->stop_at = now + r->drain_ms * 1000000u;
      if (now > w->stop_at && w->ninflight == 0)
        break;
    }
    if (w->rs_resume && !stopping) {
      w->rs_resume = false;
      resync_begin (w, now);
    }
    if (w->site->id == 0 && __atomic_load_n (&w->site->fail_req, __ATOMIC_ACQUIRE)) {
      /* A client read failed on a local leg (rdev_read_view). */
      uint32_t fr = __atomic_exchange_n (&w->site->fail_req, 0, __ATOMIC_ACQ_REL);
      size_t i;
      for (i = 0; i < r->ndevs; i++)
        if ((fr & (1u << i)) && !r->devs[i].local_out)
          local_fail (w, r->devs[i].local, "read", EIO);
    }
    if (w->site->id != 0)
      requests_check (w, now);
    else if (since (now, w->last_pick_ns) > 1000000000u) {
      /* A failed local leg nobody serves: is a remote site up to date now? */
      size_t i;
      w->last_pick_ns = now;
      for (i = 0; i < r->ndevs; i++) {
        struct vdev *d = &r->devs[i];
        unsigned srv;
        if (!d->local_out || d->serving || !(srv = vdev_pick_server (d)) ||
            (__atomic_load_n (&r->sites[srv].serve_req, __ATOMIC_ACQUIRE) & (1u << i)))
          continue;
        rep_event (EV_SERVED_FROM, (int) srv, d->name, "up to date now: this site serves the device");
        __atomic_fetch_or (&r->sites[srv].serve_req, 1u << i, __ATOMIC_ACQ_REL);
        worker_poke (&r->sites[srv]);
      }
    }
    if (w->site->id == 0 && __atomic_load_n (&w->site->restore_req, __ATOMIC_ACQUIRE) && !stopping)
      restore_begin (w, now, __atomic_exchange_n (&w->site->restore_req, 0, __ATOMIC_ACQ_REL));
    if (w->site->dirty) {
      /* Not fed from the log: a resync brings the site back. */
      if (!stopping && !w->paused_seen && now >= w->rs_retry_at)
        resync_begin (w, now);
    }
    else {
      if ((!stopping || now <= w->stop_at) && !w->paused_seen)
        fill (w, durable);
      if (want_ckpt (w, now, durable))
        ckpt_start (w, w->done);
      if (w->site->id != 0) {
        watchdog (w, now, durable);
        if (!stopping && !w->paused_seen) {
          resync_step (w, now, durable);
          doubt_check (w, now);
        }
      }
      else if (!stopping && w->site->resyncing)
        resync_step (w, now, durable);   /* a restore */
    }
    if (w->ninflight || w->ckpt_busy || w->nready || w->ncopies) {
      reap (w, w->nready ? 0 : TICK_MS);
      continue;
    }
    if (stopping && w->next > durable && w->done <= w->posted) {
      /* Drained everything the log had made durable; is there more coming? */
      struct replog_stats st;
      replog_get_stats (r->rl, &st);
      if (st.committed_seq < w->next || mono_ns () > w->stop_at)
        break;
    }
    /* Idle.  With applied progress not yet posted (the idle checkpoint is
     * due shortly, or a flush failed and waits for its retry) look again
     * soon; new work wakes us at once either way. */
    replog_wait_work (r->rl, w->next - 1, w->done > w->posted ? 5 : TICK_MS);
  }
}

static void *
worker_thread (void *arg)
{
  struct worker *w = arg;

  if (w->nremote)
    remote_loop (w);
  else
    local_loop (w);
  final_report (w);
  return NULL;
}

static void
worker_free (struct worker *w)
{
  unsigned i;
  if (w->evfd >= 0) {
    replog_remove_waker (w->r->rl, w->evfd);
    close (w->evfd);
  }
  for (i = 0; i < w->nlegs; i++)
    if (w->legs[i]->remote) {
      struct rlink *k = &w->legs[i]->link;
      rlink_stop (k);
      if (k->conn) {
        k->ops->close (k->conn);
        k->conn = NULL;
        k->up = false;
      }
      k->poll_tag = 0;
    }
  if (w->uring)
    io_uring_queue_exit (&w->ring);
  free (w->io);
  free (w->cdone);
  free (w->ready);
  free (w->zbuf);
  free (w->fin);
  free (w->legs);
  free (w->leg_of_dev);
  free (w->rs_cursor);
  free (w->clr);
  free (w->clr_ck);
  resync_free_buffers (w);
  free (w);
}

int
worker_start (struct site *s)
{
  struct replicator *r = s->r;
  struct worker *w = calloc (1, sizeof *w);
  struct replog_stats st;
  size_t i, j;
  int e;

  if (!w) {
    rep_error ("calloc: %m");
    return -1;
  }
  w->evfd = -1;
  replog_get_stats (r->rl, &st);
  w->site = s;
  w->r = r;
  w->qd = s->cfg->queue_depth;
  w->ndesc = st.ndesc;
  w->next = replog_applied (r->rl, s->id) + 1;
  w->done = w->posted = w->done_hwm = w->next - 1;
  w->last_ckpt_ns = w->last_progress_ns = mono_ns ();
  w->nio = w->qd + RESYNC_QD;
  w->io = calloc (w->nio, sizeof *w->io);
  w->cdone = calloc (w->ndesc, 1);
  w->ready = calloc (w->nio + 1, sizeof *w->ready);
  w->rs_cursor = calloc (r->ndevs + 2, sizeof *w->rs_cursor);
  w->clr = calloc (CLR_MAX, sizeof *w->clr);
  w->clr_ck = calloc (CLR_MAX, sizeof *w->clr_ck);
  w->fin = calloc (w->qd, sizeof *w->fin);
  w->legs = calloc (r->ndevs + 1, sizeof *w->legs);
  w->leg_of_dev = calloc (r->ndevs + 1, sizeof *w->leg_of_dev);
  if (!w->fin || !w->legs || !w->leg_of_dev || !w->rs_cursor || !w->clr || !w->clr_ck ||
      !w->io || !w->cdone || !w->ready || posix_memalign ((void **) &w->zbuf, 4096, ZBUF_SIZE) != 0) {
    rep_error ("worker: out of memory");
    goto err;
  }
  memset (w->zbuf, 0, ZBUF_SIZE);
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->site != s->id)
        continue;
      l->windex = w->nlegs;
      w->legs[w->nlegs++] = l;
      w->leg_of_dev[i] = l;
      if (l->remote) {
        w->nremote++;
        if (!l->link.up) {
          s->disconnected = true;          /* unreachable at start: not counted */
          rlink_want (&l->link);
        }
      }
    }
  if (w->nremote) {
    if ((w->evfd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
      rep_error ("site %u: eventfd: %m", s->id);
      goto err;
    }
    replog_add_waker (r->rl, w->evfd);
    for (i = 0; i < w->nlegs; i++)
      if (w->legs[i]->remote)
        w->legs[i]->link.wake_fd = w->evfd;
  }
  /* Payload bytes this site has still to apply (fall_behind "size"). */
  if (!s->dirty) {
    uint64_t seq, b = 0;
    if (s->id && (replog_site_flags (r->rl, s->id) & RL_SITE_RESYNC))
      w->rs_resume = w->rs_restarted = true;   /* carry on with the resync */
    for (seq = w->next; seq <= st.committed_seq; seq++) {
      const struct rl_desc *d = replog_desc (r->rl, seq);
      if (d->op == RL_OP_WRITE)
        b += d->length;
    }
    s->bytes_base = (int64_t) b;
  }
  s->done_seq = w->done;
  if (!(replog_site_flags (r->rl, s->id) & (RL_SITE_RESYNC | RL_SITE_IN_DOUBT)) &&
      !s->in_doubt && !(r->rec.new_sites & (1u << s->id)) && w->done) {
    /* A consistent prefix at its applied seq (a dirty one too, until a
     * resync starts); the entry's time if it is still in the log. */
    const struct rl_desc *d = replog_desc (r->rl, w->done);
    s->cons_seq = w->done;
    s->cons_time_ns = d->seq == w->done ? d->time_ns : 0;
    s->cons_valid = true;
  }
  w->uring = false;
  if (!r->force_sync_engine) {
    e = io_uring_queue_init (w->nio * 2 + 2 * w->nremote + 8, &w->ring, 0);
    if (e == 0)
      w->uring = true;
    else if (e == -EPERM || e == -ENOSYS)
      rep_warn ("site %u: io_uring is not allowed here (%s); using synchronous I/O in a thread",
                s->id, strerror (-e));
    else {
      rep_error ("site %u: io_uring_queue_init: %s", s->id, strerror (-e));
      goto err;
    }
  }
  r->engine = w->uring ? "io_uring" : "threads";
  for (i = 0; i < w->nlegs; i++)
    if (w->legs[i]->remote && rlink_start (&w->legs[i]->link) == -1)
      goto err;
  s->worker = w;
  e = pthread_create (&s->thread, NULL, worker_thread, w);
  if (e) {
    errno = e;
    rep_error ("site %u: cannot start the worker thread: %m", s->id);
    s->worker = NULL;
    goto err;
  }
  s->running = true;
  return 0;
 err:
  worker_free (w);
  return -1;
}

void
worker_stop (struct site *s)
{
  struct worker *w = s->worker;

  if (!s->running)
    return;
  pthread_join (s->thread, NULL);
  s->running = false;
  worker_free (w);
  s->worker = NULL;
  pthread_mutex_lock (&s->lock);
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

void
worker_poke (struct site *s)
{
  struct worker *w = s->worker;
  uint64_t one = 1;
  if (w && w->evfd >= 0 && write (w->evfd, &one, sizeof one) < 0) {
    /* a wake-up is pending anyway */
  }
}
