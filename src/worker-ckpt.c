/* worker-ckpt.c: checkpoints.  A checkpoint flushes every leg in service
 * (fdatasync, NBD FLUSH, SCSI SYNCHRONIZE CACHE) and then posts the
 * applied sequence to the log header, which lets the log release the
 * entries; it also clears the dirty bits of resync copies the flush
 * covers, and now and then flushes the dirty-log files.
 *
 * Owns: the checkpoint state of struct worker (w->ck, posted, the hand-
 * over of the completed copies' list at the start of a checkpoint and
 * the clearing of their bits, w->cc), the
 * site's consistent point (cons_*) while it is in log mode.
 * Invariants: a flush covers only writes that completed before it was
 * submitted, so applied is posted only up to what had completed when the
 * checkpoint started (ckpt_seq); a failed flush posts nothing and is
 * retried after RETRY_NS; no checkpoint starts while a rewind is pending;
 * a copy's dirty bits are cleared only by a checkpoint that covers it.
 * May call: worker-local.c (leg_sync_failed, local_back), worker-int.h
 * helpers, replog/pftrace/dirtylog functions.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirtylog.h"
#include "leg-label.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"
#include "worker-int.h"

/* A remote site's consistent point on its legs' labels, at most every
 * 2 x LABEL_CHECK_INTERVAL_NS (leg labels: what a takeover starts from); a
 * remote leg's label is read first, by the label thread (the worker never
 * waits for a remote's label I/O): one that changed under the running
 * connection (a disk replaced behind the target) has the connection
 * dropped and checked again (lb.recheck, worker-remote.c). */
static void
cons_labels (struct worker *w, uint64_t upto, uint64_t time_ns)
{
  uint64_t now = mono_ns ();
  uint64_t every = w->r->label_check_ns ? w->r->label_check_ns : LABEL_CHECK_INTERVAL_NS;
  unsigned i;
  bool write;

  if (w->site->id == 0 || now - w->ck.label_ns < every)
    return;
  w->ck.label_ns = now;
  /* Read at most every `every`; written, durably, at most every 2 x every. */
  write = now - w->ck.label_write_ns >= 2 * every;
  if (write)
    w->ck.label_write_ns = now;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    bool marked;
    if (l->lb.where == LABEL_NONE || (l->remote && (!l->link.up || leglabel_pending (l))))
      continue;
    pthread_mutex_lock (&l->lb.lock);
    marked = !l->lb.have || (l->lb.cur.flags & (LBL_NEW | LBL_RESYNC));
    pthread_mutex_unlock (&l->lb.lock);
    if (marked)                    /* a copy not finished keeps saying so */
      continue;
    if (l->remote)                 /* read first: the same disk still? (label thread) */
      leglabel_post (l, write ? LBL_CONSISTENT : 0, upto, time_ns, true);
    else if (write)
      leglabel_write (l, LBL_CONSISTENT, upto, time_ns);
  }
}

/* The legs hold every entry <= upto durably: post it as applied (the log
 * may release them); unless a resync or in-doubt writes make the legs a
 * mix of states, it is the site's consistent point too. */
static void
post (struct worker *w, uint64_t upto)
{
  struct site *s = w->site;

  if (upto > w->posted) {
    w->hl.last_progress_ns = mono_ns ();
    replog_post_applied (w->r->rl, s->id, upto);
    w->posted = upto;
    if (!site_state_is_resync (site_state (s)) && !site_in_doubt (s)) {
      /* The legs hold a state the devices had: when entry `upto` was logged. */
      const struct rl_desc *d = replog_desc (w->r->rl, upto);
      pthread_mutex_lock (&s->lock);
      s->cons.seq = upto;
      s->cons.time_ns = d->seq == upto ? d->time_ns : 0;
      s->cons.valid = true;
      pthread_mutex_unlock (&s->lock);
      cons_labels (w, upto, d->seq == upto ? d->time_ns : 0);
    }
  }
  w->ck.last_ns = mono_ns ();
}

/* One leg flush of an asynchronous checkpoint completed. */
void
ckpt_result (struct worker *w, int res)
{
  unsigned i;

  if (res < 0 && !w->ck.err)
    w->ck.err = res;
  if (--w->ck.pending)
    return;
  w->ck.busy = false;
  w->ck.force = false;
  if (w->ck.err) {
    errno = -w->ck.err;
    if (w->site->id == 0)                /* a remote leg's: logged by remote_flush_done */
      rep_error ("site %u: flushing a leg failed: %m; applied sequence not advanced", w->site->id);
    w->ck.err = 0;
    w->ck.retry_at = mono_ns () + RETRY_NS;
    return;
  }
  if (w->site->id == 0 && !local_back (w)) {
    /* A local leg that failed and no remote site serves: the log holds
     * the only copy of what it may lack (safety rule 4), and the index
     * still refers to those entries: nothing is released. */
    w->ck.retry_at = mono_ns () + RETRY_NS;
    return;
  }
  w->ck.count++;
  for (i = 0; i < w->cc.nclr_ck; i++)
    bitmap_clear_bits (w->cc.clr_ck[i].leg->dirty_log, w->cc.clr_ck[i].first, w->cc.clr_ck[i].n);
  if (w->cc.nclr_ck && since (mono_ns (), w->cc.dlog_flushed_ns) > DLOG_FLUSH_NS) {
    /* Progress of a resync reaches the persistent dirty logs now and
     * then, so that a restart does not copy it again. */
    for (i = 0; i < w->nlegs; i++)
      if (w->legs[i]->dlog && !__atomic_load_n (&w->legs[i]->dlog_failed, __ATOMIC_ACQUIRE))
        /* A failure is not forgotten: the pages written since the file's
         * last good sync stay marked, and the syncer's next flush (before
         * any header write) reopens the file, writes them again, and
         * reports or gives up on the file. */
        (void) leg_dlog_flush (w->legs[i]);
    w->cc.dlog_flushed_ns = mono_ns ();
  }
  w->cc.nclr_ck = 0;
  for (i = 0; w->site->id != 0 && i < w->nlegs; i++)
    if (w->legs[i]->sync_failed) {
      w->legs[i]->sync_failed = false;   /* flushed again, after the rewrite */
      if (!strncmp (w->legs[i]->last_error, "flush: ", 7))
        w->legs[i]->last_error[0] = 0;
      if (w->legs[i]->state == LEG_FAILED && w->legs[i]->written_ok)
        __atomic_store_n (&w->legs[i]->state, LEG_REPLICATING, __ATOMIC_RELAXED);
    }
  if (w->ck.streamed) {
    /* The answers of what it covers came first (the receiver answers in
     * order), but may not be handled yet: the rest after the reap. */
    if (w->ck.seq > w->st.covered)
      w->st.covered = w->ck.seq;
    ckpt_post_covered (w);
    return;
  }
  post (w, w->ck.seq);
}

/* Streaming: post what a flush covered and has completed (after a reap). */
void
ckpt_post_covered (struct worker *w)
{
  uint64_t upto = w->st.covered < w->done ? w->st.covered : w->done;

  if (upto > w->posted)
    post (w, upto);
}

/* A remote leg's flush (of a checkpoint) was answered: the link calls
 * this on the worker thread.  An old connection's answer is ignored. */
static void
remote_flush_done (void *opaque, int res)
{
  struct leg_ckpt *c = opaque;
  struct leg *l = c->leg;
  struct worker *w = c->w;

  if (!l->ckpt_pending || l->ckpt_gen != l->link.gen)
    return;
  l->ckpt_pending = 0;
  l->link.last_answer_ns = mono_ns ();
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
    if (unflushed (w))
      w->rw.pending = true;
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

/* Start a checkpoint of everything completed so far (up to `upto`): the
 * flushes cover only writes that completed before they were submitted.
 * Asynchronous with io_uring and for remote legs; the threads engine
 * calls fdatasync inline. */
void
ckpt_start (struct worker *w, uint64_t upto)
{
  unsigned i;

  if (w->ck.busy || (upto <= w->posted && !w->ck.force) || w->rw.pending)
    return;
  rep_debugc (REP_DBG_WORKER, "site %u: checkpoint: flushing the legs up to seq %" PRIu64,
              w->site->id, upto);
  w->ck.seq = upto;
  w->ck.streamed = w->st.on;
  w->ck.err = 0;
  if (w->cc.nclr && !w->cc.nclr_ck) {          /* the copies completed so far */
    struct clr *t = w->cc.clr_ck;
    w->cc.clr_ck = w->cc.clr;
    w->cc.nclr_ck = w->cc.nclr;
    w->cc.clr = t;
    w->cc.nclr = 0;
  }
  w->ck.pending = 1;                   /* held until all are submitted */
  w->ck.busy = true;
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (out_of_service (l))
      continue;                          /* nothing of its is applied */
    if (l->remote) {
      if (!l->link.up) {
        if (!w->ck.err)
          w->ck.err = -ENOTCONN;
        continue;
      }
      l->ckpt_cb.leg = l;
      l->ckpt_cb.w = w;
      l->ckpt_pending = 1;
      l->ckpt_gen = l->link.gen;
      l->ckpt_sent_ns = mono_ns ();
      w->ck.pending++;
      if (l->link.ops->submit (l->link.conn, LREQ_FLUSH, NULL, 0, 0, 0, remote_flush_done,
                               &l->ckpt_cb) < 0 && l->ckpt_pending) {
        l->ckpt_pending = 0;
        ckpt_result (w, -ENOTCONN);
      }
    }
    else if (w->eng.uring) {
      struct io_uring_sqe *sqe = get_sqe (w);
      io_uring_prep_fsync (sqe, l->fd, IORING_FSYNC_DATASYNC);
      io_uring_sqe_set_data64 (sqe, CKPT_LEG_BIT | i);
      pft_sync (l->fd, 'S');
      w->ck.pending++;
    }
    else {
      pft_sync (l->fd, 'S');
      if (fdatasync (l->fd) == 0)
        pft_sync (l->fd, 'D');
      else {
        int e = errno;
        leg_sync_failed (w, l, e);
        if (!w->ck.err)
          w->ck.err = -e;
      }
    }
  }
  ckpt_result (w, 0);                    /* drop the hold */
}

/* Is a checkpoint due (between barriers)? */
bool
want_ckpt (struct worker *w, uint64_t now, uint64_t durable)
{
  uint64_t age = since (now, w->ck.last_ns);
  if (w->done <= w->posted || w->ck.busy || now < w->ck.retry_at || w->rw.pending)
    return false;
  if (w->ninflight == 0 && w->next > durable)
    /* Idle: not at once, which would cost a leg flush and a header write
     * per request at low queue depths (and delay a sync write's own log
     * sync behind a header round). */
    return since (now, w->ck.last_done_ns) >= CKPT_IDLE_NS || w->ctl.stop_at ||
      replog_space_wanted (w->r->rl);
  return age > CKPT_INTERVAL_NS || w->done - w->posted > w->ndesc / 4 ||
    (age > CKPT_FULL_NS && replog_space_wanted (w->r->rl));
}
