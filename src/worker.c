/* worker.c: one thread per site applies the log to that site's legs; this
 * file is the thread's top: it starts and stops the worker, runs the loop
 * (remote_loop for sites with connections, local_loop for path legs only),
 * reaps completions and dispatches them by their io_uring tag, and takes
 * the administrator's requests.
 *
 * The pieces (worker-int.h lists the layers): worker-apply.c applies
 * entries, worker-ckpt.c checkpoints, worker-remote.c drives connections
 * and link health, worker-resync.c copies regions, worker-local.c takes a
 * failed local leg out of service and restores it.
 *
 * Legs are files or block devices (io_uring, or synchronous calls when
 * io_uring is refused) or remote connections (link.h).  A remote leg's
 * socket is polled through the same ring, so one thread drives the local
 * leg, the path legs and every connection of a site.  The log pokes an
 * eventfd when there is new work.  Between barriers we checkpoint (flush
 * legs, post applied) when the log wants space, when idle, or every so
 * often (want_ckpt).
 *
 * Owns: struct worker's life (worker_start/worker_free), the thread,
 * site->worker/running, the eventfd, the ring's completion queue, the
 * thread's control (w->ctl: the bound on the stop, the paused flag as
 * acted on).
 * Invariants: the worker's state is touched by its thread only (after
 * worker_start hands it over, before worker_stop joins it).
 * May call: every worker piece (worker-*.c) and worker-int.h; nothing
 * calls back into this file but through worker_poke (replicator.h).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "bitmap.h"
#include "event.h"
#include "link.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"
#include "worker-int.h"

/* One completion from the ring: dispatch it by its tag. */
static void
dispatch (struct worker *w, uint64_t tag, int res)
{
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
    w->eng.evfd_armed = false;
    if (read (w->eng.evfd, &v, sizeof v) < 0) {
      /* nothing to read: fine */
    }
  }
  else if (tag & POLL_BIT)
    poll_result (w, tag, res);
  else if (tag < w->nio && w->io[tag].active && !w->io[tag].leg->remote &&
           io_result (w, (unsigned) tag, res))
    io_issue (w, (unsigned) tag);
}

/* io_uring: submit, wait up to timeout_ms for the first completion,
 * handle every completion there is. */
static void
reap_uring (struct worker *w, unsigned timeout_ms)
{
  struct io_uring_cqe *cqe;
  struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000,
                                  .tv_nsec = (long long) (timeout_ms % 1000) * 1000000 };
  unsigned head, n = 0;
  int r;

  if (w->nremote)
    arm_polls (w);
  r = timeout_ms || w->nready ? io_uring_submit_and_wait_timeout (&w->eng.ring, &cqe, w->nready ? 0 : 1, &ts, NULL)
                              : io_uring_submit (&w->eng.ring);
  if (r < 0 && r != -ETIME && r != -EINTR)
    rep_debugc (REP_DBG_WORKER, "io_uring_submit_and_wait_timeout: %s", strerror (-r));
  io_uring_for_each_cqe (&w->eng.ring, head, cqe) {
    n++;
    dispatch (w, io_uring_cqe_get_data64 (cqe), cqe->res);
  }
  io_uring_cq_advance (&w->eng.ring, n);
}

/* The threads engine with connections: poll() them and the eventfd. */
static void
reap_poll (struct worker *w, unsigned timeout_ms)
{
  struct pollfd pfd[1 + 64];
  unsigned map[1 + 64], np = 0, i;
  pfd[np].fd = w->eng.evfd;
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
        if (read (w->eng.evfd, &v, sizeof v) < 0) {
          /* fine */
        }
      }
      else if (w->legs[map[i]]->link.up &&
               w->legs[map[i]]->link.ops->notify (w->legs[map[i]]->link.conn, pfd[i].revents) == -1)
        link_down (w, w->legs[map[i]], false, "connection closed by the remote");
    }
}

/* Reap completions; wait up to timeout_ms for the first. */
static void
reap (struct worker *w, unsigned timeout_ms)
{
  if (w->eng.uring)
    reap_uring (w, timeout_ms);
  else if (w->nremote && !w->nready)
    reap_poll (w, timeout_ms);
  drain_ready (w);
  finish_batch (w);
}

/* A leg's failback record (read from its label at connect) into its dirty
 * log: the regions it changed that we lack, to be copied over from the
 * device.  Returns the regions marked. */
static uint64_t
record_merge (struct leg *l)
{
  uint8_t *rec;
  uint64_t bytes, i, before = bitmap_count (l->dirty_log);
  uint32_t rs;

  pthread_mutex_lock (&l->lb.lock);
  rec = l->lb.record;
  bytes = l->lb.record_bytes;
  rs = l->lb.record_region;
  l->lb.record = NULL;
  pthread_mutex_unlock (&l->lb.lock);
  if (!rec)
    return 0;
  for (i = 0; i < bytes * 8 && i * rs < l->dev->size; i++)
    if (rec[i / 8] & (1u << (i % 8)))
      bitmap_set_range (l->dirty_log, i * rs, rs);
  free (rec);
  return bitmap_count (l->dirty_log) - before;
}

/* Requests from the administrator (replctl resync, pause, resume). */
static void
requests_check (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint32_t full = __atomic_exchange_n (&s->resync_full_devs, 0, __ATOMIC_ACQ_REL);
  uint32_t rec = __atomic_exchange_n (&s->record_devs, 0, __ATOMIC_ACQ_REL);
  uint32_t reads = __atomic_exchange_n (&s->read_site_req, 0, __ATOMIC_ACQ_REL);
  bool asap = __atomic_exchange_n (&s->resync_now, false, __ATOMIC_ACQ_REL);
  bool paused = site_paused (s);
  enum site_state st;
  unsigned i;

  if (reads)
    take_reads (w, reads);
  if (paused != w->ctl.paused_seen) {
    w->ctl.paused_seen = paused;
    if (paused) {
      rep_event (EV_SITE_PAUSED, (int) s->id, NULL, "paused by the administrator: not fed from "
                 "the log, clients do not wait for it; its entries stay in the log");
      if (!site_state_is_disconnected (site_state (s)))
        site_link_lost (s);
    }
    else {
      rep_event (EV_SITE_RESUMED, (int) s->id, NULL, "resumed");
      w->hl.last_progress_ns = now;
    }
  }
  if (full || rec) {
    uint64_t n = 0;
    for (i = 0; i < w->nlegs; i++)
      if (full & (1u << w->legs[i]->dev->index)) {
        bitmap_set_all (w->legs[i]->dirty_log);
        w->rs.cursor[i] = 0;
      }
      else if (rec & (1u << w->legs[i]->dev->index)) {
        n += record_merge (w->legs[i]);
        w->rs.cursor[i] = 0;
      }
    st = site_state (s);
    if (site_state_is_resync (st) && full)
      resync_recount_full (w);
    else if (site_state_is_resync (st))
      __atomic_add_fetch (&s->resync.regions, n, __ATOMIC_RELAXED);
    else if (!site_state_is_dirty_log (st))
      w->rs.want = true;                 /* in place: the site stays in log mode */
  }
  st = site_state (s);
  if ((asap || full || rec) && site_state_is_dirty_log (st)) {
    w->rs.retry_at = 0;
    w->rs.backoff_ns = 0;
  }
  else if (asap && !site_state_is_resync (st))
    w->rs.want = true;                   /* regions marked in log mode (verify --mark) */
}

static void
final_report (struct worker *w)
{
  struct replog_stats st;
  replog_get_stats (w->r->rl, &st);
  if (st.committed_seq > w->done && !site_state_is_dirty_log (site_state (w->site)))
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
      if (!w->ctl.stop_at)
        w->ctl.stop_at = now + STOP_REMOTE_NS;
      if (site_state_is_dirty_log (site_state (w->site)) || now > w->ctl.stop_at ||
          (w->ninflight == 0 && !w->ck.busy && (w->done <= w->posted || !links_all_up (w))))
        break;
    }
    if (w->rs.resume && !stopping) {
      w->rs.resume = false;
      resync_begin (w, now);
    }
    requests_check (w, now);
    if (!site_state_is_dirty_log (site_state (w->site))) {
      if (!stopping && !w->ctl.paused_seen)
        fill (w, durable);
      if (want_ckpt (w, now, durable) || (stopping && w->ninflight == 0 && !w->ck.busy &&
                                          w->done > w->posted && now >= w->ck.retry_at))
        ckpt_start (w, w->done);
      watchdog (w, now, durable);
      site_sync_check (w->site, durable);        /* back to sync once caught up */
      if (!stopping && !site_state_is_dirty_log (site_state (w->site)) && !w->ctl.paused_seen) {
        resync_step (w, now, durable);
        doubt_check (w, now);
      }
    }
    else if (!stopping && !w->ctl.paused_seen && now >= w->rs.retry_at && links_all_up (w))
      resync_begin (w, now);
    /* Until the next tick, or sooner when a request parked by the site's
     * rate may go (a wake-up, a completion or a poll ends it earlier). */
    reap (w, w->nready ? 0 : links_wait_ms (w, mono_ns ()));
    if (w->st.covered > w->posted)
      ckpt_post_covered (w);             /* streaming */
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
      if (!w->ctl.stop_at)
        w->ctl.stop_at = now + r->drain_ms * 1000000u;
      if (now > w->ctl.stop_at && w->ninflight == 0)
        break;
    }
    if (w->rs.resume && !stopping) {
      w->rs.resume = false;
      resync_begin (w, now);
    }
    if (w->site->id == 0 && __atomic_load_n (&w->site->fail_req, __ATOMIC_ACQUIRE))
      local_read_failures (w);           /* a client read failed on a local leg */
    if (w->site->id != 0)
      requests_check (w, now);
    else if (since (now, w->lo.last_pick_ns) > 1000000000u)
      local_pick_read_sites (w, now);
    if (w->site->id == 0 && __atomic_load_n (&w->site->restore_req, __ATOMIC_ACQUIRE) && !stopping &&
        restore_begin (w, __atomic_exchange_n (&w->site->restore_req, 0, __ATOMIC_ACQ_REL)))
      resync_begin (w, now);
    if (site_state_is_dirty_log (site_state (w->site))) {
      /* Not fed from the log: a resync brings the site back. */
      if (!stopping && !w->ctl.paused_seen && now >= w->rs.retry_at)
        resync_begin (w, now);
    }
    else {
      if ((!stopping || now <= w->ctl.stop_at) && !w->ctl.paused_seen)
        fill (w, durable);
      if (want_ckpt (w, now, durable))
        ckpt_start (w, w->done);
      if (w->site->id != 0) {
        watchdog (w, now, durable);
        site_sync_check (w->site, durable);      /* back to sync once caught up */
        if (!stopping && !w->ctl.paused_seen) {
          resync_step (w, now, durable);
          doubt_check (w, now);
        }
      }
      else if (!stopping && site_state_is_resync (site_state (w->site)))
        resync_step (w, now, durable);   /* a restore */
    }
    if (w->ninflight || w->ck.busy || w->nready || w->rs.ncopies) {
      reap (w, w->nready ? 0 : TICK_MS);
      continue;
    }
    if (stopping && w->next > durable && w->done <= w->posted) {
      /* Drained everything the log had made durable; is there more coming? */
      struct replog_stats st;
      replog_get_stats (r->rl, &st);
      if (st.committed_seq < w->next || mono_ns () > w->ctl.stop_at)
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
  if (w->eng.evfd >= 0) {
    replog_remove_waker (w->r->rl, w->eng.evfd);
    close (w->eng.evfd);
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
  if (w->eng.uring)
    io_uring_queue_exit (&w->eng.ring);
  free (w->io);
  free (w->cdone);
  free (w->ready);
  free (w->zbuf);
  free (w->st.rec);
  free (w->fin);
  free (w->legs);
  free (w->leg_of_dev);
  free (w->rs.cursor);
  free (w->cc.clr);
  free (w->cc.clr_ck);
  coalesce_free (w);
  resync_free_buffers (w);
  free (w);
}

/* A worker for site s, at its applied sequence in the log, with its
 * tables allocated; NULL (reported) when out of memory. */
static struct worker *
worker_alloc (struct site *s, const struct replog_stats *st)
{
  struct replicator *r = s->r;
  struct worker *w = calloc (1, sizeof *w);

  if (!w) {
    rep_error ("calloc: %m");
    return NULL;
  }
  w->eng.evfd = -1;
  w->site = s;
  w->r = r;
  w->on_copy_done = copy_done;
  w->qd = s->cfg->queue_depth;
  w->ndesc = st->ndesc;
  w->next = replog_applied (r->rl, s->id) + 1;
  w->done = w->posted = w->rw.done_hwm = w->next - 1;
  w->ck.last_ns = w->hl.last_progress_ns = mono_ns ();
  /* Labels were written at attach: the periodic check and consistent
   * point come an interval later, not at the first checkpoint. */
  w->ck.label_ns = w->ck.label_write_ns = w->ck.last_ns;
  rate_init (w, w->ck.last_ns);
  w->nlog = s->id != 0 && w->qd < STREAM_QD ? STREAM_QD : w->qd;
  w->nio = w->nlog + RESYNC_QD;
  w->io = calloc (w->nio, sizeof *w->io);
  w->cdone = calloc (w->ndesc, 1);
  w->ready = calloc (w->nio + 1, sizeof *w->ready);
  w->rs.cursor = calloc (r->ndevs + 2, sizeof *w->rs.cursor);
  w->cc.clr = calloc (CLR_MAX, sizeof *w->cc.clr);
  w->cc.clr_ck = calloc (CLR_MAX, sizeof *w->cc.clr_ck);
  w->fin = calloc (w->nlog, sizeof *w->fin);
  w->legs = calloc (r->ndevs + 1, sizeof *w->legs);
  w->leg_of_dev = calloc (r->ndevs + 1, sizeof *w->leg_of_dev);
  if (!w->fin || !w->legs || !w->leg_of_dev || !w->rs.cursor || !w->cc.clr || !w->cc.clr_ck ||
      !w->io || !w->cdone || !w->ready || posix_memalign ((void **) &w->zbuf, 4096, ZBUF_SIZE) != 0) {
    rep_error ("worker: out of memory");
    worker_free (w);
    return NULL;
  }
  memset (w->zbuf, 0, ZBUF_SIZE);
  return w;
}

/* The site's legs, per device; the eventfd that wakes a site with
 * connections. */
static int
worker_take_legs (struct worker *w)
{
  struct site *s = w->site;
  struct replicator *r = w->r;
  size_t i, j;

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
          site_unreachable_at_start (s);   /* not counted */
          rlink_want (&l->link);
        }
      }
    }
  if (s->cfg->rate && !w->nremote)
    rep_warn ("site %u: rate limits what goes to NBD and iSCSI legs; the site has none, so "
              "nothing is limited", s->id);
  if (w->nremote) {
    if ((w->eng.evfd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
      rep_error ("site %u: eventfd: %m", s->id);
      return -1;
    }
    replog_add_waker (r->rl, w->eng.evfd);
    for (i = 0; i < w->nlegs; i++)
      if (w->legs[i]->remote) {
        w->legs[i]->link.wake_fd = w->eng.evfd;
        if (w->legs[i]->link.up)
          link_adopted (w, w->legs[i]);   /* connected at start */
      }
  }
  return 0;
}

/* What the site's status starts from: the bytes it has still to apply,
 * its done sequence, its consistent point; a resync to carry on with. */
static void
worker_site_from_log (struct worker *w, const struct replog_stats *st)
{
  struct site *s = w->site;
  struct replicator *r = w->r;

  /* Payload bytes this site has still to apply (fall_behind "size"). */
  if (!site_state_is_dirty_log (site_state (s))) {
    uint64_t seq, b = 0;
    if (s->id && (replog_site_flags (r->rl, s->id) & RL_SITE_RESYNC))
      w->rs.resume = w->rs.restarted = true;   /* carry on with the resync */
    for (seq = w->next; seq <= st->committed_seq; seq++) {
      const struct rl_desc *d = replog_desc (r->rl, seq);
      if (d->op == RL_OP_WRITE)
        b += d->length;
    }
    s->bytes_base = (int64_t) b;
  }
  s->done_seq = w->done;
  if (!(replog_site_flags (r->rl, s->id) & (RL_SITE_RESYNC | RL_SITE_IN_DOUBT)) &&
      !site_in_doubt (s) && !(r->rec.new_sites & (1u << s->id)) && w->done) {
    /* A consistent prefix at its applied seq (a dirty one too, until a
     * resync starts); the entry's time if it is still in the log. */
    const struct rl_desc *d = replog_desc (r->rl, w->done);
    s->cons.seq = w->done;
    s->cons.time_ns = d->seq == w->done ? d->time_ns : 0;
    s->cons.valid = true;
  }
}

/* io_uring if allowed, else synchronous calls in the thread. */
static int
worker_engine_init (struct worker *w)
{
  struct replicator *r = w->r;
  int e;

  w->eng.uring = false;
  if (!r->force_sync_engine) {
    e = io_uring_queue_init (w->nio * 2 + 2 * w->nremote + 8, &w->eng.ring, 0);
    if (e == 0)
      w->eng.uring = true;
    else if (e == -EPERM || e == -ENOSYS)
      rep_warn ("site %u: io_uring is not allowed here (%s); using synchronous I/O in a thread",
                w->site->id, strerror (-e));
    else {
      rep_error ("site %u: io_uring_queue_init: %s", w->site->id, strerror (-e));
      return -1;
    }
  }
  r->engine = w->eng.uring ? "io_uring" : "threads";
  return 0;
}

int
worker_start (struct site *s)
{
  struct replicator *r = s->r;
  struct worker *w;
  struct replog_stats st;
  size_t i;
  int e;

  replog_get_stats (r->rl, &st);
  if (!(w = worker_alloc (s, &st)))
    return -1;
  if (worker_take_legs (w) == -1)
    goto err;
  /* Coalescing within one epoch: remote sites (NBD_REPLICATOR_NO_COALESCE
   * switches it off, for tests and benchmarks). */
  w->co.enabled = w->nremote && !getenv ("NBD_REPLICATOR_NO_COALESCE");
  worker_site_from_log (w, &st);
  if (worker_engine_init (w) == -1)
    goto err;
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
  worker_wake (s);
}
