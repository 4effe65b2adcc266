/* worker.c: one thread per site applies the log to that site's legs.
 *
 * Loop shape (liburing's io_uring-cp): queue as many entries as the queue
 * depth allows, submit once, then reap at least one completion and drain
 * the rest.  Rules kept here:
 *   - entries are taken in log order and only once durable in the log;
 *   - no two overlapping entries of one device are in flight at once (the
 *     later one waits for the earlier to complete);
 *   - a barrier (end of epoch k) is crossed only when everything before it
 *     has completed, the legs are flushed (fdatasync) and the header
 *     durably records applied >= the barrier: epoch k+1 never starts
 *     before epoch k is durable there;
 *   - between barriers we checkpoint (flush legs, post applied) when the
 *     log wants space, when idle, or every so often, so the log drains even
 *     if clients never flush;
 *   - short writes are resubmitted for the rest, -EAGAIN/-EINTR retried;
 *     an I/O error marks the leg failed and the entry is retried later
 *     (it stays in the log).
 * When io_uring is refused (EPERM/ENOSYS: seccomp, io_uring_disabled) the
 * same state machine runs with synchronous system calls, one at a time.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>

#include <liburing.h>

#include "replicator.h"
#include "report.h"

#define ZBUF_SIZE        (1u << 20)
#define CKPT_INTERVAL_NS (500u * 1000000u)    /* checkpoint at least this often */
#define CKPT_FULL_NS     (5u * 1000000u)      /* ... or this often while the log is full */
#define CKPT_TAG         UINT64_MAX           /* user_data of checkpoint fsyncs */

struct wio {
  bool active;
  uint64_t seq;
  struct leg *leg;
  int op;                          /* RL_OP_* */
  int flags;
  uint64_t off;
  uint64_t len, done;
  const uint8_t *buf;              /* payload in the log, or NULL */
  bool zerofill;                   /* fallocate unsupported: writing zeroes */
  int sync_res;                    /* threads engine: result of the call */
};

struct worker {
  struct site *site;
  struct replicator *r;
  bool uring;
  struct io_uring ring;
  unsigned qd, ninflight;
  struct wio *io;
  uint8_t *cdone;                  /* per log slot: completed */
  uint64_t ndesc;
  uint64_t next;                   /* next seq to take */
  uint64_t done;                   /* every seq <= done completed */
  uint64_t posted;                 /* applied posted to the log */
  uint64_t last_ckpt_ns;
  /* An asynchronous checkpoint: fsyncs of the legs in flight. */
  bool ckpt_busy;
  unsigned ckpt_pending;
  uint64_t ckpt_seq;
  int ckpt_err;
  uint8_t *zbuf;
  struct wio *fin;                 /* completed in this reap, not yet finished */
  unsigned nfin;
  /* threads engine: completed ops waiting to be reaped */
  unsigned *ready;
  unsigned nready;
};

static uint64_t
mono_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Pause before retrying a failed operation. */
static void
backoff (void)
{
  struct timespec ts = { 0, 200 * 1000000 };
  nanosleep (&ts, NULL);
}

static struct leg *
leg_at_site (struct vdev *d, unsigned site)
{
  size_t i;
  for (i = 0; i < d->nlegs; i++)
    if (d->legs[i].site == site)
      return &d->legs[i];
  return NULL;
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
static void
io_issue (struct worker *w, unsigned idx)
{
  struct wio *io = &w->io[idx];
  int fd = io->leg->fd;
  uint64_t rest = io->len - io->done;
  const void *src = io->buf ? io->buf + io->done : NULL;
  int mode = 0;

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
    struct io_uring_sqe *sqe = io_uring_get_sqe (&w->ring);
    if (!sqe) {
      io_uring_submit (&w->ring);
      sqe = io_uring_get_sqe (&w->ring);
    }
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
    io->sync_res = r >= 0 ? (int) r : -errno;
    w->ready[w->nready++] = idx;
  }
}

static bool
overlaps_inflight (struct worker *w, const struct rl_desc *d)
{
  unsigned i;
  for (i = 0; i < w->qd; i++) {
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
  struct site *s = w->site;
  w->cdone[seq % w->ndesc] = 1;
  if (seq != w->done + 1)
    return;
  while (w->done + 1 < w->next && w->cdone[(w->done + 1) % w->ndesc]) {
    w->cdone[(w->done + 1) % w->ndesc] = 0;
    w->done++;
  }
  pthread_mutex_lock (&s->lock);
  s->done_seq = w->done;
  if (s->sync_waiters)
    pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

/* An entry is on its leg.  Completions are finished in batches (see
 * finish_batch): one overlay lock per device per reap, not per entry. */
static void
io_complete (struct worker *w, struct wio *io)
{
  if (io->leg->state == LEG_FAILED) {
    rep_info ("device '%s': leg at site %u is writable again", io->leg->dev->name, io->leg->site);
    __atomic_store_n (&io->leg->state, LEG_REPLICATING, __ATOMIC_RELAXED);
  }
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
  unsigned i;

  if (w->site->id == 0)
    for (i = 0; i < w->nfin; i++) {
      struct vdev *d = w->fin[i].leg->dev;
      if (d != locked) {
        if (locked)
          pthread_mutex_unlock (&locked->ov_lock);
        pthread_mutex_lock (&d->ov_lock);
        locked = d;
      }
      overlay_remove (d->ov, w->fin[i].off, w->fin[i].off + w->fin[i].len, w->fin[i].seq);
    }
  if (locked)
    pthread_mutex_unlock (&locked->ov_lock);
  for (i = 0; i < w->nfin; i++)
    mark_done (w, w->fin[i].seq);
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
  if (res < 0 && io->op != RL_OP_WRITE && !io->zerofill &&
      (res == -EOPNOTSUPP || res == -EINVAL || res == -ENODEV)) {
    /* This leg cannot do that fallocate mode: switch it off for good. */
    int mode = zero_mode (io);
    if (mode & FALLOC_FL_PUNCH_HOLE)
      l->punch_ok = false;
    else
      l->zero_range_ok = false;
    rep_debug ("device '%s': leg %s: fallocate mode 0x%x unsupported, falling back",
               l->dev->name, l->cfg->path, mode);
    return true;
  }
  if (res < 0) {
    errno = -res;
    l->errors++;
    if (l->state != LEG_FAILED)
      rep_error ("device '%s': leg %s (site %u): write at %" PRIu64 " failed: %m; "
                 "the entry stays in the log and is retried", l->dev->name, l->cfg->path,
                 l->site, io->off + io->done);
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    backoff ();                  /* the leg may come back */
    return true;
  }
  if (res == 0 && io->op == RL_OP_WRITE) {
    errno = ENOSPC;
    rep_error ("device '%s': leg %s: write at %" PRIu64 " wrote nothing", l->dev->name,
               l->cfg->path, io->off + io->done);
    backoff ();
    return true;
  }
  if (io->op == RL_OP_WRITE || io->zerofill)
    io->done += (uint64_t) res;
  else
    io->done = io->len;          /* fallocate returns 0 on success */
  if (io->done < io->len)
    return true;                 /* short write: the rest */
  io_complete (w, io);
  return false;
}

static void
post (struct worker *w, uint64_t upto)
{
  if (upto > w->posted) {
    replog_post_applied (w->r->rl, w->site->id, upto);
    w->posted = upto;
  }
  w->last_ckpt_ns = mono_ns ();
}

/* One leg fsync of an asynchronous checkpoint completed. */
static void
ckpt_result (struct worker *w, int res)
{
  if (res < 0 && !w->ckpt_err)
    w->ckpt_err = res;
  if (--w->ckpt_pending)
    return;
  w->ckpt_busy = false;
  if (w->ckpt_err) {
    errno = -w->ckpt_err;
    rep_error ("site %u: fdatasync of a leg failed: %m; applied sequence not advanced", w->site->id);
    w->ckpt_err = 0;
    return;
  }
  post (w, w->ckpt_seq);
}

/* Start an asynchronous checkpoint of everything completed so far: the
 * fsyncs cover only writes that completed before they were submitted. */
static void
ckpt_start (struct worker *w)
{
  struct replicator *r = w->r;
  size_t i;

  if (w->ckpt_busy || w->done <= w->posted || !w->uring)
    return;
  w->ckpt_seq = w->done;
  w->ckpt_err = 0;
  for (i = 0; i < r->ndevs; i++) {
    struct leg *l = leg_at_site (&r->devs[i], w->site->id);
    struct io_uring_sqe *sqe;
    if (!l)
      continue;
    if (!(sqe = io_uring_get_sqe (&w->ring))) {
      io_uring_submit (&w->ring);
      sqe = io_uring_get_sqe (&w->ring);
    }
    io_uring_prep_fsync (sqe, l->fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64 (sqe, CKPT_TAG);
    w->ckpt_pending++;
  }
  w->ckpt_busy = w->ckpt_pending > 0;
}

/* Reap completions; wait up to timeout_ms for the first. */
static void
reap (struct worker *w, unsigned timeout_ms)
{
  if (!w->uring) {
    while (w->nready) {
      unsigned idx = w->ready[--w->nready];
      if (io_result (w, idx, w->io[idx].sync_res))
        io_issue (w, idx);
    }
    finish_batch (w);
    return;
  }
  {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000,
                                    .tv_nsec = (long long) (timeout_ms % 1000) * 1000000 };
    unsigned head, n = 0;
    int r = io_uring_submit_and_wait_timeout (&w->ring, &cqe, 1, &ts, NULL);
    if (r < 0 && r != -ETIME && r != -EINTR)
      rep_debug ("io_uring_submit_and_wait_timeout: %s", strerror (-r));
    io_uring_for_each_cqe (&w->ring, head, cqe) {
      uint64_t tag = io_uring_cqe_get_data64 (cqe);
      int res = cqe->res;
      n++;
      if (tag == CKPT_TAG)
        ckpt_result (w, res);
      else if (tag < w->qd && w->io[tag].active && io_result (w, (unsigned) tag, res))
        io_issue (w, (unsigned) tag);
    }
    io_uring_cq_advance (&w->ring, n);
    finish_batch (w);
  }
}

/* Flush the legs and post `upto` as applied.  Synchronous. */
static int
checkpoint (struct worker *w, uint64_t upto)
{
  struct replicator *r = w->r;
  size_t i;

  if (upto <= w->posted)
    return 0;
  for (i = 0; i < r->ndevs; i++) {
    struct leg *l = leg_at_site (&r->devs[i], w->site->id);
    if (l && fdatasync (l->fd) == -1) {
      l->errors++;
      rep_error ("device '%s': leg %s: fdatasync: %m; applied sequence not advanced",
                 r->devs[i].name, l->cfg->path);
      __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
      return -1;
    }
  }
  post (w, upto);
  return 0;
}

/* Queue entries up to the queue depth; stops early at a barrier that
 * needs the pipeline empty, or at an entry overlapping one in flight. */
static void
fill (struct worker *w, uint64_t durable)
{
  struct replicator *r = w->r;

  while (w->ninflight < w->qd && w->next <= durable) {
    const struct rl_desc *d = replog_desc (r->rl, w->next);
    struct vdev *v;
    unsigned idx;

    if (d->op == RL_OP_BARRIER) {
      if (w->ninflight || w->ckpt_busy || w->done != w->next - 1)
        return;                          /* epoch k must complete first */
      /* Epoch boundary: flush the legs, the header records applied >= the
       * barrier, and only then does epoch k+1 start here.  On failure we
       * stay before the barrier and try again. */
      if (checkpoint (w, w->next) == -1 ||
          replog_wait_applied (r->rl, w->site->id, w->next) == -1) {
        backoff ();
        return;
      }
      w->cdone[w->next % w->ndesc] = 0;
      w->next++;
      mark_done (w, w->next - 1);
      continue;
    }
    if (overlaps_inflight (w, d))
      return;
    for (idx = 0; idx < w->qd && w->io[idx].active; idx++)
      ;
    v = &r->devs[d->device];
    w->io[idx] = (struct wio) {
      .active = true, .seq = w->next, .leg = leg_at_site (v, w->site->id),
      .op = d->op, .flags = d->flags, .off = d->offset, .len = d->length,
      .buf = d->op == RL_OP_WRITE ? replog_payload (r->rl, d) : NULL,
    };
    w->cdone[w->next % w->ndesc] = 0;
    w->ninflight++;
    w->next++;
    io_issue (w, idx);
  }
}

static void *
worker_thread (void *arg)
{
  struct worker *w = arg;
  struct replicator *r = w->r;
  uint64_t stop_at = 0;

  for (;;) {
    uint64_t durable = replog_wait_work (r->rl, w->next - 1, 0);
    bool stopping = __atomic_load_n (&r->stop, __ATOMIC_ACQUIRE);

    if (stopping) {
      if (!stop_at)
        stop_at = mono_ns () + r->drain_ms * 1000000u;
      if (mono_ns () > stop_at) {
        if (w->ninflight == 0)
          break;
      }
    }
    if (!stopping || mono_ns () <= stop_at)
      fill (w, durable);
    if (w->ninflight || w->ckpt_busy) {
      reap (w, 100);
      if (w->done > w->posted && !w->ckpt_busy) {
        uint64_t age = mono_ns () - w->last_ckpt_ns;
        if (age > CKPT_INTERVAL_NS || w->done - w->posted > w->ndesc / 4 ||
            (age > CKPT_FULL_NS && replog_space_wanted (r->rl))) {
          if (w->uring)
            ckpt_start (w);
          else
            checkpoint (w, w->done);
        }
      }
      continue;
    }
    /* Idle: make what we applied durable, then wait for more. */
    if (w->done > w->posted)
      checkpoint (w, w->done);
    if (stopping && w->next > durable) {
      /* Drained everything the log had made durable; is there more coming? */
      struct replog_stats st;
      replog_get_stats (r->rl, &st);
      if (st.committed_seq < w->next || mono_ns () > stop_at)
        break;
    }
    replog_wait_work (r->rl, w->next - 1, 100);
  }
  if (w->done > w->posted)
    checkpoint (w, w->done);
  {
    struct replog_stats st;
    replog_get_stats (r->rl, &st);
    if (st.committed_seq > w->done)
      rep_warn ("site %u: stopped after the %" PRIu64 " ms drain limit with %" PRIu64
                " entries not yet applied; they stay in the log and are replayed at the next start",
                w->site->id, r->drain_ms, st.committed_seq - w->done);
  }
  return NULL;
}

static void
worker_free (struct worker *w)
{
  if (w->uring)
    io_uring_queue_exit (&w->ring);
  free (w->io);
  free (w->cdone);
  free (w->ready);
  free (w->zbuf);
  free (w->fin);
  free (w);
}

int
worker_start (struct site *s)
{
  struct replicator *r = s->r;
  struct worker *w = calloc (1, sizeof *w);
  struct replog_stats st;
  int e;

  if (!w) {
    rep_error ("calloc: %m");
    return -1;
  }
  replog_get_stats (r->rl, &st);
  w->site = s;
  w->r = r;
  w->qd = s->cfg->queue_depth;
  w->ndesc = st.ndesc;
  w->next = replog_applied (r->rl, s->id) + 1;
  w->done = w->posted = w->next - 1;
  w->last_ckpt_ns = mono_ns ();
  w->io = calloc (w->qd, sizeof *w->io);
  w->cdone = calloc (w->ndesc, 1);
  w->ready = calloc (w->qd, sizeof *w->ready);
  w->fin = calloc (w->qd, sizeof *w->fin);
  if (!w->fin ||
      !w->io || !w->cdone || !w->ready || posix_memalign ((void **) &w->zbuf, 4096, ZBUF_SIZE) != 0) {
    rep_error ("worker: out of memory");
    goto err;
  }
  memset (w->zbuf, 0, ZBUF_SIZE);
  w->uring = false;
  if (!r->force_sync_engine) {
    e = io_uring_queue_init (w->qd * 2, &w->ring, 0);
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

int
site_wait_done (struct site *s, uint64_t seq)
{
  struct replicator *r = s->r;

  pthread_mutex_lock (&s->lock);
  s->sync_waiters++;
  while (s->done_seq < seq && s->running && !__atomic_load_n (&r->stop, __ATOMIC_ACQUIRE))
    pthread_cond_wait (&s->cv, &s->lock);
  s->sync_waiters--;
  pthread_mutex_unlock (&s->lock);
  return 0;
}
