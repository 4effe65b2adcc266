/* worker-remote.c: remote legs on the ring, and the link health of a
 * remote site.
 *
 * A remote leg's socket is polled through the worker's ring (one-shot
 * POLL_ADD, re-armed when its fd or events change, tagged with a
 * generation), so one thread drives the local leg, the path legs and
 * every connection of a site.  Every request has a deadline
 * (request_timeout); past it the connection is aborted and what it had in
 * flight is in doubt (neither NBD nor an iSCSI session reinstatement
 * stops a write the remote already runs: those regions are recorded, see
 * leg->doubt).  A lost connection parks its requests; the connector
 * thread reconnects with backoff and the parked requests are re-sent
 * (re-sending entries of the current epoch is idempotent).  A site that
 * makes no progress for disconnect_timeout is marked disconnected:
 * clients stop waiting for it.  When writers wait for log space and the
 * site holds the tail, a disconnected site at once, or a connected one
 * after pull_ahead, is moved to dirty-log mode (go_dirty).
 *
 * The site's rate (cfg rate): a token bucket in front of every request
 * sent on the site's connections (log entries, resync copies), charged
 * with the request's wire cost (payload + RATE_REQ_BYTES).  A request the
 * bucket cannot pay for yet is parked with retry_at set to when it can,
 * and the loop sleeps no longer than the earliest such moment
 * (links_wait_ms): no busy wait, no sleep under a lock, and a stop or a
 * lost connection is seen at once.  Writes go in pieces no larger than the
 * bucket.  The link's throughput is what the remote acknowledged, over a
 * sliding window (ratelimit.h), published for status every tick.
 *
 * Owns: struct rlink's worker side (conn, up, gen, poll_tag, armed_*),
 * the rate and the throughput meter (w->rt, site->link_bytes*),
 * the in-doubt regions (leg->doubt) and the site's in-doubt flag when a
 * connection is aborted, the link health of struct worker (w->hl), the
 * rewind after a drop (w->rw, with worker-apply.c), the site's
 * disconnected / catching_up flags and its move to dirty-log mode.
 * Invariants: a completion of an older connection generation is ignored;
 * a write in flight on an aborted (unfenced) connection marks its region
 * in doubt before anything newer is sent, durably (RL_SITE_IN_DOUBT);
 * after a drop, entries after the applied sequence are re-sent (rewind).
 * May call: worker-ckpt.c (ckpt_result), worker-int.h helpers, link.h,
 * replog/bitmap functions.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "event.h"
#include "link.h"
#include "replicator.h"
#include "report.h"
#include "stream.h"
#include "worker-int.h"

/* The bucket and the meter, at the worker's start. */
void
rate_init (struct worker *w, uint64_t now)
{
  uint64_t rate = w->site->cfg->rate, burst = ratelimit_burst_for (rate, RATE_MIN_BURST);

  ratelimit_init (&w->rt.bucket, rate, burst, now);
  for (w->rt.piece = RATE_MIN_PIECE; w->rt.piece * 2 + RATE_REQ_BYTES <= burst &&
                                     w->rt.piece < RESYNC_CHUNK; w->rt.piece *= 2)
    ;
  ratemeter_init (&w->rt.meter, LINK_WINDOW_NS, now, 0);
}

/* How long the loop may sleep: until the next tick, or until a parked
 * request may go (never 0: nothing to spin on). */
unsigned
links_wait_ms (struct worker *w, uint64_t now)
{
  uint64_t ms;

  if (!w->rt.wake_ns)
    return TICK_MS;
  ms = w->rt.wake_ns > now ? (w->rt.wake_ns - now + 999999) / 1000000 : 1;
  return ms < 1 ? 1 : ms > TICK_MS ? TICK_MS : (unsigned) ms;
}

static void
remote_done (void *opaque, int res)
{
  struct wio *io = opaque;
  struct worker *w = io->w;

  if (!io->active || !io->sent || io->gen != io->leg->link.gen)
    return;                                /* an old connection's answer */
  io->sent = false;
  io->leg->link.last_answer_ns = mono_ns ();
  if (res >= 0) {
    w->rt.sent += io->wire;
    __atomic_add_fetch (&w->site->link_bytes, io->wire, __ATOMIC_RELAXED);
  }
  push_ready (w, (unsigned) (io - w->io), res);
}

static void
disarm_poll (struct worker *w, struct leg *l)
{
  if (l->link.poll_tag && w->eng.uring) {
    struct io_uring_sqe *sqe = get_sqe (w);
    io_uring_prep_poll_remove (sqe, l->link.poll_tag);
    io_uring_sqe_set_data64 (sqe, IGNORE_TAG);
  }
  l->link.poll_tag = 0;
}

/* ---- streaming to a receiver (struct wk_stream, stream.h) ---------------- */

/* Forget the log entries (and stream records) in flight or parked on l:
 * they are taken again from the log after the rewind. */
static void
stream_forget (struct worker *w, struct leg *l)
{
  unsigned i;

  for (i = 0; i < w->nlog; i++)
    if (w->io[i].active && w->io[i].leg == l) {
      w->io[i].active = false;
      w->io[i].sent = false;
      w->ninflight--;
    }
  w->st.nrec = 0;
  w->st.parked = false;
  w->st.on = false;
  __atomic_store_n (&w->site->stream, false, __ATOMIC_RELAXED);
}

/* A new connection of leg l: stream on it if its check found a receiver
 * with room for the record and the site has no other remote leg (one
 * connection carries the order).  Nothing parked from before is sent on
 * it: the rewind starts after what the receiver holds. */
static void
stream_adopt (struct worker *w, struct leg *l)
{
  const struct link_info *info = &l->link.info;

  if (!info->stream || w->nremote != 1)
    return;
  if (!w->st.rec && posix_memalign ((void **) &w->st.rec, 4096,
                                    (size_t) STREAM_RECS * STREAM_IO_MAX) != 0) {
    w->st.rec = NULL;
    rep_error ("site %u: out of memory for stream records: a round trip per epoch", w->site->id);
    return;
  }
  stream_forget (w, l);
  w->st.on = true;
  w->st.leg = l;
  w->st.off = info->stream_off;
  w->st.len = info->stream_len;
  w->st.resume = true;
  w->st.resume_seq = info->stream_seq;
  w->rw.pending = true;
  __atomic_store_n (&w->site->stream, true, __ATOMIC_RELAXED);
  if (info->stream_seq)
    __atomic_add_fetch (&w->site->stream_resumes, 1, __ATOMIC_RELAXED);
  rep_info ("device '%s': site %u: %s is a receiver: streaming (its stream record: seq %" PRIu64
            ", applied %" PRIu64 ")", l->dev->name, l->site, l->link.shown, info->stream_seq,
            w->posted);
}

/* The receiver holds something this log cannot account for: every region
 * of the leg is in doubt (copied again), the site not consistent until. */
static void
stream_all_in_doubt (struct worker *w, struct leg *l, const char *why)
{
  if (!l->doubt)
    __atomic_store_n (&l->doubt, bitmap_new (l->dirty_log->size, l->dirty_log->region_size),
                      __ATOMIC_RELEASE);
  if (l->doubt) {
    bitmap_set_range (l->doubt, 0, l->dev->size);
    l->doubt_pending = true;
  }
  if (replog_change_site_flags (w->r->rl, w->site->id, RL_SITE_IN_DOUBT, 0) == -1)
    rep_error ("site %u: could not record the in-doubt writes in the log header: %m", w->site->id);
  site_mark_in_doubt (w->site);
  rep_event (EV_LINK_DOWN, (int) l->site, l->dev->name, "%s: %s; every region of the leg is "
             "copied again", l->link.shown, why);
}

/* At the rewind (fill): start after the receiver's record when it is past
 * the applied sequence; the entries up to it are held there (a flush makes
 * them durable, the next checkpoint posts them). */
void
stream_resume (struct worker *w, uint64_t durable)
{
  uint64_t seq = w->st.resume_seq;

  if (!w->st.resume)
    return;
  w->st.resume = false;
  if (!w->st.on || seq <= w->posted)
    return;
  if (seq > durable) {
    stream_all_in_doubt (w, w->st.leg, "the receiver's stream record is past this log's end");
    return;
  }
  w->done = seq;
  w->next = seq + 1;
  if (w->done > w->rw.done_hwm)
    w->rw.done_hwm = w->done;
  publish_done (w);
  rep_debugc (REP_DBG_WORKER, "site %u: streaming from seq %" PRIu64 " (the receiver holds up "
              "to %" PRIu64 ")", w->site->id, w->next, seq);
}

/* Streaming, at barrier seq (its entry logged at time_ns): everything
 * before it was sent; send its record, and a flush if none is under way.
 * false: no room for the record yet (try again later). */
bool
stream_barrier (struct worker *w, uint64_t seq, uint64_t time_ns)
{
  struct leg *l = w->st.leg;
  uint8_t *buf;
  unsigned idx, i;

  if (w->st.nrec >= STREAM_RECS || w->ninflight >= w->nlog)
    return false;
  for (i = 0, idx = w->nlog; i < w->nlog; i++)
    if (!w->io[(w->slot_hint + i) % w->nlog].active) {
      idx = (w->slot_hint + i) % w->nlog;
      break;
    }
  if (idx == w->nlog)
    return false;
  w->slot_hint = idx + 1;
  buf = w->st.rec + (size_t) (w->st.rec_next++ % STREAM_RECS) * STREAM_IO_MAX;
  stream_record (buf, w->st.len, l->dev, seq, time_ns);
  w->io[idx] = (struct wio) {
    .active = true, .seq = seq, .leg = l, .op = RL_OP_WRITE,
    .off = w->st.off, .len = w->st.len, .buf = buf, .w = w, .marker = true,
  };
  w->ninflight++;
  w->st.nrec++;
  remote_issue (w, idx);
  __atomic_add_fetch (&w->site->stream_records, 1, __ATOMIC_RELAXED);
  if (!w->ck.busy)
    ckpt_start (w, seq);                 /* covers everything sent before it */
  return true;
}

/* A stream record was taken (finish_batch). */
void
stream_record_done (struct worker *w)
{
  if (w->st.nrec)
    w->st.nrec--;
}

/* A connection of leg l is the worker's now (at start, or taken from the
 * connector). */
void
link_adopted (struct worker *w, struct leg *l)
{
  __atomic_store_n (&l->link.receiver, l->link.info.receiver, __ATOMIC_RELAXED);
  l->link.last_answer_ns = mono_ns ();
  stream_adopt (w, l);
}

/* The requests of leg l in flight (sent, not answered) may still be run by
 * the remote later, after newer writes: their regions are in doubt (copied
 * again once the grace period from link.down_since_ns has passed), and the
 * site's in-doubt flag is in the log header, durably, before anything newer
 * is sent (after a crash the site must not claim to be a consistent prefix
 * either).  Returns how many. */
static unsigned
doubt_in_flight (struct worker *w, struct leg *l)
{
  unsigned i, n = 0;

  /* A bitmap like the dirty log's, made on first use; status reads
   * l->doubt without a lock: publish it initialised. */
  if (!l->doubt)
    __atomic_store_n (&l->doubt, bitmap_new (l->dirty_log->size, l->dirty_log->region_size),
                      __ATOMIC_RELEASE);
  if (!l->doubt) {
    rep_error ("%s: out of memory for the in-doubt regions: the site is not consistent until "
               "a full resync", l->link.what);
    site_mark_in_doubt (w->site);
    return 0;
  }
  for (i = 0; i < w->nio; i++) {
    struct wio *io = &w->io[i];
    if (io->active && io->leg == l && io->sent && io->op != RL_OP_BARRIER) {
      bitmap_set_range (l->doubt, io->off, io->len);
      l->doubt_pending = true;
      n++;
    }
  }
  if (n) {
    l->doubt_events++;
    if (!site_in_doubt (w->site) &&
        replog_change_site_flags (w->r->rl, w->site->id, RL_SITE_IN_DOUBT, 0) == -1)
      rep_error ("site %u: could not record the in-doubt writes in the log header: %m",
                 w->site->id);
    site_mark_in_doubt (w->site);
  }
  return n;
}

/* The connection of leg l is gone (or we abort it).  Park its requests
 * for re-sending; in_doubt: we aborted it while the remote may still
 * execute what it had. */
void
link_down (struct worker *w, struct leg *l, bool in_doubt, const char *why)
{
  struct rlink *k = &l->link;
  unsigned i, ndoubt = 0;

  if (!k->up)
    return;
  __atomic_add_fetch (&w->site->legs_gen, 1, __ATOMIC_ACQ_REL);   /* verify looks again */
  if (k->ops->fenced)
    in_doubt = false;
  if (w->st.on && w->st.leg == l) {
    /* Streaming: the next connection fences this one at the receiver
     * (nothing of it lands later) and says where to start again: what
     * was in flight is forgotten, not parked. */
    in_doubt = false;
    stream_forget (w, l);
    w->rw.pending = true;
  }
  if (in_doubt)
    ndoubt = doubt_in_flight (w, l);
  for (i = 0; i < w->nio; i++) {
    struct wio *io = &w->io[i];
    if (!io->active || io->leg != l)
      continue;
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
  /* Copies and entries it acknowledged but no flush covered may be lost
   * with the remote's cache (a restarted server): copy those regions again
   * (their bits stay set), and re-send the entries after the applied
   * sequence (same epoch: idempotent) before the next checkpoint. */
  forget_copies (w, l);
  if (unflushed (w))
    w->rw.pending = true;
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

/* The site's rate: may a piece of wire bytes go now?  Else io is parked
 * until the bucket can pay for it. */
static bool
rate_admits (struct worker *w, struct wio *io, uint64_t wire)
{
  uint64_t now, wait;

  if (!w->rt.bucket.rate)
    return true;
  now = mono_ns ();
  if (!(wait = ratelimit_take (&w->rt.bucket, wire, now)))
    return true;
  io->parked = true;
  io->retry_at = now + wait;
  wake_at (w, io->retry_at);
  return false;
}

/* Issue (or park) the next piece of a request on a remote leg. */
void
remote_issue (struct worker *w, unsigned idx)
{
  struct wio *io = &w->io[idx];
  struct leg *l = io->leg;
  struct rlink *k = &l->link;
  uint64_t rest = io->len - io->done;
  int op, flags = 0, r;
  const void *src = NULL;

  if (!k->up || (io->retry_at && mono_ns () < io->retry_at)) {
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
  if (op == LREQ_WRITE && w->rt.bucket.rate && rest > w->rt.piece && !w->st.on)
    rest = w->rt.piece;                  /* no larger than the bucket (streaming: whole) */
  io->wire = RATE_REQ_BYTES + (op == LREQ_WRITE ? rest : 0);
  if (!rate_admits (w, io, io->wire)) {
    if (w->st.on && !io->copy)
      w->st.parked = true;               /* the newest entry: nothing goes after it */
    return;
  }
  if (w->st.on && !io->copy)
    w->st.parked = false;
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

/* Every tick: the link's throughput for status; and the earliest moment
 * a request parked on a connection that is up may go. */
static void
rate_service (struct worker *w, uint64_t now, bool tick)
{
  unsigned i;

  if (tick)
    __atomic_store_n (&w->site->link_bytes_per_s, ratemeter_update (&w->rt.meter, now, w->rt.sent),
                      __ATOMIC_RELAXED);
  w->rt.wake_ns = 0;
  if (!w->rt.bucket.rate)
    return;                            /* nothing is parked by a rate */
  for (i = 0; i < w->nio; i++) {
    const struct wio *io = &w->io[i];
    if (io->active && io->parked && io->retry_at > now && io->leg->remote && io->leg->link.up)
      wake_at (w, io->retry_at);
  }
}

/* Adopt new connections, run timers, enforce deadlines, re-send parked
 * requests. */
void
links_service (struct worker *w, uint64_t now)
{
  struct site *s = w->site;
  uint64_t deadline = s->cfg->request_timeout_ms * 1000000u;
  unsigned i;
  bool tick = since (now, w->hl.last_tick_ns) >= TICK_MS * 1000000u;

  if (tick)
    w->hl.last_tick_ns = now;
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
      link_adopted (w, l);
    }
    if (tick && k->ops->tick (k->conn) == -1) {
      link_down (w, l, false, "connection closed");
      continue;
    }
    if (__atomic_exchange_n (&l->lb.recheck, false, __ATOMIC_ACQ_REL)) {
      link_down (w, l, true, "its label changed under the connection: checked again");
      continue;
    }
    /* Deadlines: a request (or flush) outstanding too long.  Streaming,
     * the receiver answers in order and a deep pipeline waits in the
     * link's queue: a request is late only once no answer at all came for
     * request_timeout (else an epoch larger than what the link carries in
     * that time would be given up and sent again for ever). */
    for (j = 0; j < w->nio && k->up; j++) {
      struct wio *io = &w->io[j];
      if (io->active && io->leg == l && io->sent && since (now, io->sent_ns) > deadline &&
          !(w->st.on && since (now, k->last_answer_ns) <= deadline))
        link_down (w, l, true, "no answer within request_timeout");
    }
    if (k->up && l->ckpt_pending && since (now, l->ckpt_sent_ns) > deadline &&
        !(w->st.on && since (now, k->last_answer_ns) <= deadline))
      link_down (w, l, true, "flush not answered within request_timeout");
    if (!k->up)
      continue;
    for (j = 0; j < w->nio; j++) {
      struct wio *io = &w->io[j];
      if (io->active && io->leg == l && io->parked && (!io->retry_at || now >= io->retry_at))
        remote_issue (w, j);
    }
  }
  rate_service (w, now, tick);
}

bool
links_all_up (struct worker *w)
{
  unsigned i;
  for (i = 0; i < w->nlegs; i++)
    if (w->legs[i]->remote && !w->legs[i]->link.up)
      return false;
  return true;
}

/* Arm one-shot polls for the connections (and the log's eventfd). */
void
arm_polls (struct worker *w)
{
  unsigned i;

  if (!w->eng.evfd_armed) {
    struct io_uring_sqe *sqe = get_sqe (w);
    io_uring_prep_poll_add (sqe, w->eng.evfd, POLLIN);
    io_uring_sqe_set_data64 (sqe, EVFD_TAG);
    w->eng.evfd_armed = true;
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
      k->poll_tag = POLL_BIT | ((uint64_t) i << 32) | (++w->eng.poll_gen & 0xffffffffu);
      io_uring_prep_poll_add (sqe, fd, (unsigned) ev);
      io_uring_sqe_set_data64 (sqe, k->poll_tag);
      k->armed_fd = fd;
      k->armed_ev = ev;
    }
  }
}

void
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

/* ---- link health (remote sites) ---------------------------------------- */

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
  /* A write (or copy) still in flight may land at the remote after the
   * resync has copied its region anew, putting older bytes over newer
   * ones where the dirty log says "copied" (safety rule 5): it is in
   * doubt, copied again once the grace period from now has passed.  The
   * connection stays (dropping one in the middle of a request has made an
   * nbdkit remote abort).  A receiver's stream needs none of this: it
   * takes the requests of a connection in order, so the resync's copies,
   * sent later on it, land after them. */
  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    unsigned n;
    if (!l->remote || !l->link.up || (w->st.on && w->st.leg == l))
      continue;
    if ((n = doubt_in_flight (w, l))) {
      l->link.down_since_ns = mono_ns ();   /* the in-doubt grace counts from now */
      rep_info ("device '%s': site %u: %u writes in flight to %s when the site moved to "
                "dirty-log mode are in doubt (the remote may still apply them): their regions "
                "are copied again after the grace period", l->dev->name, l->site, n, l->link.shown);
    }
  }
  /* Forget what was in flight: it is covered by the dirty logs (every
   * entry after the site's recorded applied seq is). */
  for (i = 0; i < w->nio; i++)
    if (w->io[i].active) {
      w->io[i].active = false;
      w->io[i].sent = false;
    }
  w->ninflight = 0;
  w->st.nrec = 0;                      /* streaming: the records in flight too */
  w->st.parked = false;
  coalesce_reset (w);                  /* a run's entries: in the dirty logs too */
  w->rs.ncopies = 0;
  w->cc.nclr = w->cc.nclr_ck = 0;              /* their bits stay set */
  w->rs.flushing = false;
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
  if (site_enter_dirty_log_locked (s)) {
    /* A resync was under way: back off before the next try (hysteresis:
     * a slow link does not flip between the modes). */
    w->rs.backoff_ns = w->rs.backoff_ns ? w->rs.backoff_ns * 2 : RESYNC_RETRY_NS;
    if (w->rs.backoff_ns > RESYNC_RETRY_MAX)
      w->rs.backoff_ns = RESYNC_RETRY_MAX;
  }
  w->rs.retry_at = mono_ns () + (w->rs.backoff_ns ? w->rs.backoff_ns : RESYNC_RETRY_NS);
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

void
watchdog (struct worker *w, uint64_t now, uint64_t durable)
{
  struct site *s = w->site;
  uint64_t timeout = s->cfg->disconnect_timeout_ms * 1000000u;
  bool up = links_all_up (w);
  bool pending = durable > w->done || w->ninflight;

  if ((!pending && up) || w->ctl.paused_seen)
    w->hl.last_progress_ns = now;
  if (!site_state_is_disconnected (site_state (s)) && since (now, w->hl.last_progress_ns) > timeout) {
    rep_event (EV_SITE_DISCONNECTED, (int) s->id, NULL, "disconnected (%s for %" PRIu64 " ms); "
               "clients no longer wait for it, its entries stay in the log",
               up ? "no progress" : "link down", s->cfg->disconnect_timeout_ms);
    site_link_lost (s);
  }
  else if (site_state_is_disconnected (site_state (s)) && up && !w->ctl.paused_seen &&
           since (now, w->hl.last_progress_ns) < TICK_MS * 1000000u) {
    rep_event (EV_SITE_BACK, (int) s->id, NULL, "back; catching up with %" PRIu64 " entries "
               "from the log", durable > w->done ? durable - w->done : 0);
    site_link_back (s);
  }
  /* Over the fall_behind threshold (clients wait for the site) or back
   * under it: one event per change. */
  {
    bool over = !site_state_is_dirty_log (site_state (s)) &&
      __atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) != FB_NONE && site_over_threshold (s, durable);
    if (over != w->hl.behind_reported) {
      w->hl.behind_reported = over;
      if (over)
        rep_event (EV_SITE_BEHIND, (int) s->id, NULL, "over its fall_behind threshold: clients "
                   "wait for it (%" PRIu64 " entries behind)", durable > w->done ? durable - w->done : 0);
      else
        rep_event (EV_SITE_WITHIN, (int) s->id, NULL, "back within its fall_behind threshold");
    }
  }
  if (site_state_is_catching_up (site_state (s)) && durable - w->done <= w->qd) {
    rep_event (EV_SITE_CAUGHT_UP, (int) s->id, NULL, "caught up");
    site_caught_up (s);
  }
  /* Pull-ahead: the log is full and this site holds it.  A slow site
   * releases an entry now and then, a waiting writer takes the space and
   * waits again at once: the log counts as kept full across such short
   * gaps, else a site that is slow but not stopped would hold writers
   * back at its pace for ever. */
  if (replog_site_holds_full_log (w->r->rl, s->id) &&
      !__atomic_load_n (&s->read_site_devs, __ATOMIC_ACQUIRE)) {
    if (!w->hl.full_since_ns)
      w->hl.full_since_ns = now;
    w->hl.full_last_ns = now;
    if (site_state_is_disconnected (site_state (s)))
      go_dirty (w, "the log is full and the site is disconnected");
    else if (since (now, w->hl.full_since_ns) > s->cfg->pull_ahead_ms * 1000000u)
      go_dirty (w, "the site kept the log full for longer than pull_ahead");
    if (site_state_is_dirty_log (site_state (s)))
      w->hl.full_since_ns = 0;              /* after a resync, the clock starts again */
  }
  else if (since (now, w->hl.full_last_ns) > FULL_GAP_NS)
    w->hl.full_since_ns = 0;
}
