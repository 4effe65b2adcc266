/* worker-int.h: private to the worker files (worker*.c): the state of one
 * site's worker thread, the io_uring tags, the timing constants, and the
 * small helpers every piece uses.
 *
 * The worker is in layers; calls go down only (no file calls a file above
 * it, none calls sideways into a circle):
 *   worker.c           the thread top: worker_start/stop/poke, the two loops,
 *                      reaping and dispatching completions by tag, the
 *                      administrator's requests
 *   worker-resync.c    resync: region copies from the device view
 *   worker-apply.c     the apply core: taking entries from the log (fill),
 *                      issuing, completing, finishing batches
 *   worker-remote.c    remote legs on the ring, link health (watchdog,
 *                      disconnect, pull-ahead to dirty-log mode)
 *   worker-ckpt.c      checkpoints: leg flushes, then applied posted
 *   worker-local.c     the local leg out of service: failover, restore
 *   worker-int.h       this header (state, inline helpers)
 * A lower layer that must reach a higher one goes through a callback the
 * top registers (w->on_copy_done: a completed resync copy, seen by the apply
 * core).
 *
 * Every field of struct worker is the worker thread's alone (worker_poke
 * reads eng.evfd from any thread: set before the thread starts, never
 * changed after); what other threads see goes through struct site,
 * struct leg and struct vdev (replicator.h), with atomics or their locks.
 */
#ifndef WORKER_INT_H
#define WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#include "link.h"
#include "ratelimit.h"
#include "replicator.h"
#include "units.h"

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
/* The site's rate (cfg rate, worker-remote.c): what a request costs on the
 * wire is its payload plus this (a request header: NBD's is 28 bytes,
 * iSCSI's 48); a write-zeroes or trim costs the header only.  The bucket
 * holds a quarter second at the rate, at least RATE_MIN_BURST; a write is
 * sent in pieces no larger than the bucket (a power of two, at least
 * RATE_MIN_PIECE: a multiple of any leg's block size). */
#define RATE_REQ_BYTES   48u
#define RATE_MIN_PIECE   (64u * 1024)
#define RATE_MIN_BURST   (2u * RATE_MIN_PIECE)
#define LINK_WINDOW_NS   (5000ull * 1000000u) /* the link's throughput: over this window */
/* Coalescing (worker-apply.c, a remote site behind): a run of entries of
 * one epoch is applied as one unit when at least COALESCE_MIN of them are
 * durable in the log ahead of the site; a run has at most COALESCE_MAX
 * entries (and a quarter of the log's descriptors) and COALESCE_BYTES of
 * write payload. */
#define COALESCE_MIN     32u
#define COALESCE_MAX     16384u
#define COALESCE_BYTES   (64ull << 20)
/* Streaming to a receiver (worker-remote.c, stream.h): a remote site has
 * this many log slots (its queue_depth applies when not streaming), and at
 * most STREAM_RECS stream records in flight. */
#define STREAM_QD        1024u
#define STREAM_RECS      256u

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
  uint64_t wire;                   /* bytes on the wire of the piece in flight */
  struct worker *w;
  /* resync copies (slots qd..nio-1): not log entries */
  bool copy;
  bool staged;                     /* read, waiting for the log to be durable to hold_seq */
  bool reading;                    /* its local-leg read is in flight (io_uring) */
  uint64_t hold_seq;               /* newest entry the copied data may contain */
  uint64_t first_bit, nbits;       /* dirty-log regions it covers */
  /* coalescing: a piece of the run under way (seq: its entry), not an entry */
  bool piece;
  /* streaming: a stream record (seq: the barrier it follows), not an entry */
  bool marker;
};

struct ready {
  unsigned idx;
  int res;
};

/* A checkpoint (worker-ckpt.c): an asynchronous one has flushes of the
 * legs in flight. */
struct wk_ckpt {
  uint64_t last_ns;                /* the last one ended (post) */
  uint64_t last_done_ns;           /* an entry last completed: the idle
                                      checkpoint's clock (the watchdog resets
                                      last_progress_ns while nothing is pending) */
  bool busy;
  unsigned pending;                /* flushes outstanding (+1 while submitting) */
  uint64_t seq;                    /* applied to post once they succeed */
  int err;
  uint64_t retry_at;
  uint64_t count;                  /* checkpoints completed */
  bool force;                      /* flush the legs even with nothing new applied */
  bool streamed;                   /* started while streaming: covers what was sent,
                                      posts what of it had completed (st.covered) */
  uint64_t label_ns;               /* the legs' labels last checked (read) */
  uint64_t label_write_ns;         /* ... and last given the consistent point */
};

/* A remote site's legs' labels are read again (the same disk still?) at
 * most this often, and get the consistent point at most twice as long
 * (r->label_check_ns: NBD_REPLICATOR_LABEL_INTERVAL_MS, for tests). */
#define LABEL_CHECK_INTERVAL_NS (UINT64_C(30) * 1000000000)

/* Regions of completed copies: their bits are cleared only once a leg
 * flush covers the copies (a persistent dirty log never says "copied"
 * before the leg has it durably).  clr: since the last checkpoint
 * started; clr_ck: covered by the checkpoint under way. */
struct wk_copied {
  struct clr { struct leg *leg; uint64_t first, n; } *clr, *clr_ck;
  unsigned nclr, nclr_ck;
  uint64_t dlog_flushed_ns;        /* the dirty-log files last flushed */
};

/* Resync progress (worker-resync.c). */
struct wk_resync {
  unsigned ncopies;                /* copy slots in use */
  uint64_t *cursor;                /* per leg: next region to look at;
                                      [nlegs]: the leg to start with */
  uint64_t start, high;            /* log-mode switch seq; newest seq a copy may hold */
  uint64_t retry_at, backoff_ns;
  struct ratelimit limit;          /* resync_rate: data copies' bytes (holes free) */
  bool flushing;                   /* copies done: the legs are being flushed */
  uint64_t flush_from;             /* ... done once ck.count passes this */
  uint64_t flush_drops;            /* connection drops when the final flush started */
  bool resume;                     /* a resync was under way at the last stop */
  bool restarted;                  /* ... so copies made then may hold newer entries */
  bool want;                       /* an in-place resync was asked for (replctl) */
  bool doubt_only;                 /* this one copies in-doubt regions only: the
                                      legs' labels are left as they are (a remote
                                      whose flush is stuck behind the late write
                                      must not get a durable label write now) */
};

/* The copy slots' buffers (slot qd + k uses index k). */
struct wk_copybufs {
  uint8_t *buf[RESYNC_QD];         /* copy buffers, one per copy slot */
  uint8_t *rbuf[RESYNC_QD];        /* the local leg's bytes, read asynchronously */
  uint64_t gaps[RESYNC_QD][CP_GAPS][2];  /* ... of which these ranges count */
  unsigned ngaps[RESYNC_QD];
  uint32_t gen[RESYNC_QD];         /* read generation (stale completions) */
  uint64_t size;                   /* bytes of each buffer */
};

/* Link health (worker-remote.c; a remote site). */
struct wk_health {
  uint64_t last_progress_ns, full_since_ns, last_tick_ns;
  uint64_t full_last_ns;           /* the log was last seen held full by this site */
  bool behind_reported;            /* the last site-behind / within event sent */
};

/* A rewind: a connection was lost or a leg flush failed, so what is not
 * flushed is written again from the entry after the applied sequence. */
struct wk_rewind {
  bool pending;                    /* re-send once what is in flight is back */
  uint64_t done_hwm;               /* highest done: entries sent again after a
                                      rewind are not progress */
};

/* The local leg out of service (worker-local.c, site 0). */
struct wk_local {
  uint64_t last_pick_ns;           /* last look for a site to serve a failed leg */
};

/* The site's rate and its link's throughput (worker-remote.c; a remote
 * site).  wake_ns: the earliest moment a parked request may go (a
 * throttled one, or one waiting to be retried), so that the loop sleeps
 * no longer; 0 = none. */
struct wk_rate {
  struct ratelimit bucket;         /* cfg rate: every request to the site's connections */
  uint64_t piece;                  /* a write goes in pieces of at most this (rate set) */
  struct ratemeter meter;          /* wire bytes acknowledged, over LINK_WINDOW_NS */
  uint64_t sent;                   /* wire bytes acknowledged (the meter's counter) */
  uint64_t wake_ns;
};

/* Coalescing within one epoch (worker-apply.c).  The ordering rule lets a
 * site apply an epoch's entries in any order as long as the whole epoch is
 * durable there before the next one starts; so a site that is behind takes
 * a run of entries of one epoch (all durable in the log) at once, keeps of
 * each byte only the newest entry's version (an interval map, newest wins)
 * and sends those pieces only.  An entry that a later one of the run
 * overwrites entirely is never sent.  No entry of the run counts as done
 * until every piece of the run completed: the applied sequence (done,
 * then posted after a leg flush) never passes an entry whose bytes are
 * not on the legs, and what was acknowledged but not flushed (acked) is
 * sent again after a drop like completed entries (safety rules 1, 13).
 * The pieces never overlap each other; each still waits for whatever of
 * an earlier entry or a resync copy overlaps it in flight, and no other
 * entry is taken while the run is under way (the next epoch's barrier
 * waits for it like for any entry before it). */
struct co_piece {
  uint64_t off, len, seq;          /* seq: the entry whose bytes these are */
  uint32_t dev;
};
struct wk_coalesce {
  bool enabled;                    /* a remote site, not switched off (env) */
  bool on;                         /* a run is under way */
  bool acked;                      /* ... and a piece of it completed */
  uint64_t first, last;            /* the run's entries */
  struct co_piece *p;              /* its pieces, in issue order */
  unsigned np, cap;                /* pieces, room for */
  unsigned issued, left;           /* pieces issued; pieces not completed */
  uint64_t wbytes, wsent;          /* write payload: of its entries; of its pieces */
  uint64_t nsent;                  /* entries with at least one piece */
  uint64_t plain_until;            /* entries before this go one by one
                                      (the run found there was too short) */
  uint8_t *has_piece;              /* per entry of the run (bit), for nsent */
  struct overlay **ov;             /* per device: the interval map, made on
                                      first use, empty between runs */
};

/* Streaming to a receiver (worker-remote.c; stream.h).  A site whose one
 * remote leg is connected to a receiver sends epoch after epoch: a barrier
 * is crossed as soon as everything before it was sent, followed by a
 * stream record and a flush (one flush in flight at a time: the
 * checkpoint); entries of one device may overlap in flight (the receiver
 * takes them in order).  The applied sequence still moves only with a
 * flush's answer, up to what it covered and had completed.  Requests go
 * strictly in log order: nothing is sent after one parked by the rate,
 * and a write is never split.  After a lost connection nothing is parked:
 * everything in flight is forgotten, and the new connection's check
 * (fence, then the receiver's record) says where to start again: after
 * max(record, applied), i.e. within the one epoch the receiver may hold
 * in part. */
struct wk_stream {
  bool on;                         /* streaming on the current connection */
  struct leg *leg;                 /* ... to this leg */
  uint64_t off;                    /* the record's offset on the leg */
  uint32_t len;                    /* ... and the size of its writes */
  bool resume;                     /* at the rewind: start after resume_seq */
  uint64_t resume_seq;
  uint8_t *rec;                    /* STREAM_RECS record buffers (STREAM_IO_MAX
                                      bytes each), in turn */
  unsigned nrec, rec_next;         /* in flight; the next buffer */
  bool parked;                     /* the newest request waits for the rate */
  uint64_t covered;                /* a flush covered every entry <= this */
};

/* The thread's own control (worker.c). */
struct wk_ctl {
  bool paused_seen;                /* the site's paused flag as last acted on */
  uint64_t stop_at;                /* stopping: the bound on the drain */
};

/* The I/O engine: io_uring, or synchronous calls in this thread. */
struct wk_engine {
  bool uring;
  struct io_uring ring;
  int evfd;                        /* the log (and worker_poke) wakes us */
  bool evfd_armed;                 /* its poll is on the ring */
  uint64_t poll_gen;               /* the connections' poll tags */
};

struct worker {
  struct site *site;
  struct replicator *r;
  struct wk_engine eng;
  /* The apply position and the log slots (worker-apply.c). */
  unsigned qd, ninflight;
  unsigned nlog;                   /* log slots: qd, or STREAM_QD (remote site) */
  unsigned slot_hint;              /* where to look for a free one first */
  unsigned nio;                    /* nlog log slots + RESYNC_QD copy slots */
  struct wio *io;
  uint8_t *cdone;                  /* per log slot: completed */
  uint64_t ndesc;
  uint64_t next;                   /* next seq to take */
  uint64_t done;                   /* every seq <= done completed */
  uint64_t posted;                 /* applied posted to the log */
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
  struct wk_rewind rw;
  struct wk_ckpt ck;
  struct wk_copied cc;
  struct wk_resync rs;
  struct wk_copybufs cp;
  struct wk_health hl;
  struct wk_rate rt;
  struct wk_local lo;
  struct wk_coalesce co;
  struct wk_stream st;
  struct wk_ctl ctl;
  /* Registered by the top (worker_start): a resync copy completed
   * (worker-resync.c), called by the apply core's io_complete. */
  void (*on_copy_done) (struct worker *w, struct wio *io);
};

/* ---- small helpers ------------------------------------------------------ */


/* Time from t to now; 0 if t is later (taken after now, e.g. by a
 * completion handled since): unsigned subtraction would wrap. */
static inline uint64_t
since (uint64_t now, uint64_t t)
{
  return now > t ? now - t : 0;
}

static inline struct io_uring_sqe *
get_sqe (struct worker *w)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&w->eng.ring);
  if (!sqe) {
    io_uring_submit (&w->eng.ring);
    sqe = io_uring_get_sqe (&w->eng.ring);
  }
  return sqe;
}

/* Something parked may go at t: the loop waits no longer than that. */
static inline void
wake_at (struct worker *w, uint64_t t)
{
  if (!w->rt.wake_ns || t < w->rt.wake_ns)
    w->rt.wake_ns = t;
}

static inline void
push_ready (struct worker *w, unsigned idx, int res)
{
  w->ready[w->nready].idx = idx;
  w->ready[w->nready].res = res;
  w->nready++;
}

/* The payload bytes of the write entries after seq from, up to seq to,
 * that the log holds.  A range longer than the ring (done_seq jumping back
 * from dirty-log mode, where bytes_base is set anew after) counts 0. */
static inline uint64_t
log_write_bytes (struct worker *w, uint64_t from, uint64_t to)
{
  uint64_t seq, b = 0;

  if (to - from > w->ndesc)
    return 0;
  for (seq = from + 1; seq <= to; seq++) {
    const struct rl_desc *d = replog_desc (w->r->rl, seq);
    if (d->seq == seq && d->op == RL_OP_WRITE)
      b += d->length;
  }
  return b;
}

/* Publish what the site's legs hold: every entry <= done_seq.  Once a
 * connection is lost or a remote flush failed, only the applied sequence:
 * what the remote acknowledged since may be gone with its cache, and
 * while the entries after it are sent again, an older one lands over a
 * newer one until that is sent again too.  Clients of a sync site and
 * verify wait on it.  bytes_done follows it (site_backlog_bytes): the
 * write bytes of the entries it passes are added, those of the entries a
 * rewind takes it back over are taken off, so an entry sent again counts
 * once, and the backlog in bytes is that of the entries after done_seq. */
static inline void
publish_done (struct worker *w)
{
  struct site *s = w->site;
  uint64_t v = w->rw.pending ? w->posted : w->done;
  uint64_t old = __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED);

  if (v == old)
    return;
  if (v > old)
    __atomic_add_fetch (&s->bytes_done, log_write_bytes (w, old, v), __ATOMIC_RELAXED);
  else
    __atomic_sub_fetch (&s->bytes_done, log_write_bytes (w, v, old), __ATOMIC_RELAXED);
  pthread_mutex_lock (&s->lock);
  __atomic_store_n (&s->done_seq, v, __ATOMIC_RELAXED);   /* read without the lock too */
  if (s->sync_waiters)
    pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

/* Anything acknowledged by the legs that no flush covered yet (entries
 * done past the applied sequence, or pieces of a coalesced run): after a
 * lost connection or a failed flush it is sent again (the rewind). */
static inline bool
unflushed (const struct worker *w)
{
  return w->done > w->posted || (w->co.on && w->co.acked);
}

/* Forget the coalesced run under way (a rewind, dirty-log mode): its
 * entries are taken again from the log, or covered by the dirty logs. */
static inline void
coalesce_reset (struct worker *w)
{
  w->co.on = false;
  w->co.acked = false;
  w->co.np = w->co.issued = w->co.left = 0;
  w->co.plain_until = 0;
}

/* Copies to l that no flush covered yet: their dirty bits stay set, so
 * they are copied again. */
static inline void
forget_copies (struct worker *w, struct leg *l)
{
  unsigned i, j;
  for (i = 0, j = 0; i < w->cc.nclr; i++)
    if (w->cc.clr[i].leg != l)
      w->cc.clr[j++] = w->cc.clr[i];
  w->cc.nclr = j;
  for (i = 0, j = 0; i < w->cc.nclr_ck; i++)
    if (w->cc.clr_ck[i].leg != l)
      w->cc.clr_ck[j++] = w->cc.clr_ck[i];
  w->cc.nclr_ck = j;
}

/* The entries of l's device are not written to l (a remote site serves). */
static inline bool
out_of_service (const struct leg *l)
{
  return l->site == 0 && l->dev->local_out && l->dev->read_site != 0 &&
    __atomic_load_n (&l->state, __ATOMIC_RELAXED) == LEG_FAILED;
}

/* Wake the site's worker (worker_poke, callable from the pieces too). */
static inline void
worker_wake (struct site *s)
{
  struct worker *w = s->worker;
  uint64_t one = 1;
  if (w && w->eng.evfd >= 0 && write (w->eng.evfd, &one, sizeof one) < 0) {
    /* a wake-up is pending anyway */
  }
}

/* ---- across the worker files (each group: the file that defines it) ---- */

/* worker-local.c */
bool local_fail (struct worker *w, struct leg *l, const char *op, int e);
void leg_sync_failed (struct worker *w, struct leg *l, int e);
bool local_back (struct worker *w);
void take_reads (struct worker *w, uint32_t mask);
void restore_finish (struct worker *w);
bool restore_begin (struct worker *w, uint32_t mask);
void local_read_failures (struct worker *w);
void local_pick_read_sites (struct worker *w, uint64_t now);

/* worker-ckpt.c */
void ckpt_result (struct worker *w, int res);
void ckpt_start (struct worker *w, uint64_t upto);
void ckpt_post_covered (struct worker *w);
bool want_ckpt (struct worker *w, uint64_t now, uint64_t durable);

/* worker-remote.c */
void rate_init (struct worker *w, uint64_t now);
unsigned links_wait_ms (struct worker *w, uint64_t now);
void remote_issue (struct worker *w, unsigned idx);
bool stream_barrier (struct worker *w, uint64_t seq, uint64_t time_ns);
void stream_record_done (struct worker *w);
void stream_resume (struct worker *w, uint64_t durable);
void link_down (struct worker *w, struct leg *l, bool in_doubt, const char *why);
void link_adopted (struct worker *w, struct leg *l);
void links_service (struct worker *w, uint64_t now);
bool links_all_up (struct worker *w);
void arm_polls (struct worker *w);
void poll_result (struct worker *w, uint64_t tag, int res);
void watchdog (struct worker *w, uint64_t now, uint64_t durable);

/* worker-apply.c */
void io_issue (struct worker *w, unsigned idx);
bool io_result (struct worker *w, unsigned idx, int res);
void drain_ready (struct worker *w);
void finish_batch (struct worker *w);
void fill (struct worker *w, uint64_t durable);
bool coalesce_queued_overlaps (struct worker *w, const struct leg *l, uint64_t off, uint64_t len);
void coalesce_free (struct worker *w);

/* worker-resync.c */
void resync_free_buffers (struct worker *w);
void resync_begin (struct worker *w, uint64_t now);
void copy_read_done (struct worker *w, uint64_t tag, int res);
void resync_recount_full (struct worker *w);
void copy_done (struct worker *w, struct wio *io);
void resync_step (struct worker *w, uint64_t now, uint64_t durable);
void doubt_check (struct worker *w, uint64_t now);

#endif /* WORKER_INT_H */
