/* replog-ring.c: the replication log's run-time path.
 *
 * Owns: what happens to a log once replog_open has returned it: writers
 * reserve, fill and commit entries, and wait for durability; the syncer
 * thread makes committed entries durable in batches (group commit) and
 * writes the header (posted applied sequences, site modes and flags,
 * device flags); workers wait for durable entries, read them and post
 * what their legs applied; site modes change (dirty-log mode, resume);
 * space is released as durable headers let entries go (recording, for
 * dirty-mode sites, the regions of entries that leave the log); start,
 * stop, close.
 * Invariants (the ordering rules at the top of replog.c): an entry is
 * durable only after an fdatasync that followed its commit; a header is
 * written to the copy that is not the newest valid one, and synced before
 * the next; the tail moves only once both header copies let the space go
 * and the dirty logs recorded what dirty-mode sites lack; one sync round
 * at a time (syncing); after a failed write or sync the log stays failed.
 * May call: replog.c's internals (replog-int.h: rl_header_write,
 * rl_tail_of, rl_free) and the public format helpers, utilities (event,
 * pftrace, report), and the callbacks the layers above registered
 * (release_fn, dl_sync_fn, the wakers' eventfds).  replog.c calls nothing
 * here.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "pftrace.h"
#include "replog.h"
#include "replog-int.h"
#include "report.h"

/* ---- readers ---------------------------------------------------------------- */

const struct rl_desc *
replog_desc (struct replog *rl, uint64_t seq)
{
  return desc_at (rl, seq);
}

const void *
replog_payload (struct replog *rl, const struct rl_desc *d)
{
  return rl->data_ring + (d->data_pos % rl->data_blocks) * RL_BLOCK;
}

/* ---- the tail: releasing space -------------------------------------------------- */

/* Entries that header h lets leave the log and that dirty-mode sites
 * lack: record their regions (release_fn, under the lock).  Called before
 * h is written, so that the records are made durable before a header
 * that lets the space go exists (and once more after, a no-op then).
 * True if anything was recorded. */
static bool
mark_releases (struct replog *rl, const struct rl_header *h)
{
  uint32_t dirty;
  uint64_t t = rl_tail_of (rl, h, &dirty), seq;
  bool marked = false;
  unsigned i;

  if (rl->marked_upto < rl->tail_seq)
    rl->marked_upto = rl->tail_seq;
  if (!dirty || !rl->hooks.release_fn || t <= rl->marked_upto)
    return false;
  for (seq = rl->marked_upto; seq < t; seq++) {
    const struct rl_desc *d = desc_at (rl, seq);
    uint32_t need = 0;
    if (d->op == RL_OP_BARRIER || d->seq != seq)
      continue;
    for (i = 0; i < RL_MAX_SITES; i++)
      if ((dirty & (1u << i)) && h->sites[i].applied < seq)
        need |= 1u << i;
    if (need) {
      rl->hooks.release_fn (rl->hooks.release_opaque, need, d);
      marked = true;
    }
  }
  rl->marked_upto = t;
  return marked;
}

static void
recompute_tail (struct replog *rl)
{
  uint32_t dirty, dirty_old;
  uint64_t t = rl_tail_of (rl, &rl->hdr, &dirty), t_old = rl_tail_of (rl, &rl->hdr_old, &dirty_old);

  if (t_old < t)
    t = t_old;                           /* the fall-back copy still needs it */

  if (t <= rl->tail_seq)
    return;
  /* Normally recorded (and synced) before the header was written; if
   * not (the first header after open), now, durably, before the space
   * can be reused (the lock is dropped for that I/O; sync rounds, the
   * only callers once the log runs, are one at a time, so nothing else
   * moves the tail meanwhile). */
  if (mark_releases (rl, &rl->hdr) && rl->hooks.dl_sync_fn && rl->syncer_running) {
    uint32_t lost;
    unsigned i;
    pthread_mutex_unlock (&rl->lock);
    lost = rl->hooks.dl_sync_fn (rl->hooks.dl_sync_opaque);
    pthread_mutex_lock (&rl->lock);
    if (lost) {
      /* Not recorded: the space stays until a header says so. */
      for (i = 0; i < RL_MAX_SITES; i++)
        if (lost & (1u << i))
          rl->pend.site_set[i] |= RL_SITE_DLOG_LOST;
      return;
    }
  }
  rl->tail_seq = t;
}

/* ---- syncer: group commit and header writes ------------------------------------ */

/* Poke the workers: new durable entries, writers waiting for space, stopping, failed. */
static void
wake_workers (struct replog *rl)
{
  unsigned i;
  uint64_t one = 1;
  pthread_cond_broadcast (&rl->work_cv);
  for (i = 0; i < rl->hooks.nwakers; i++)
    if (write (rl->hooks.wakers[i], &one, sizeof one) < 0) {
      /* counter full: the worker has a wake-up pending anyway */
    }
}

static bool
header_pending (struct replog *rl)
{
  unsigned i;
  if (rl->pend.dirty || rl->pend.resume)
    return true;
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if ((rl->pend.dev_set[i] & ~rl->hdr.devices[i].flags) ||
        (rl->pend.dev_clear[i] & rl->hdr.devices[i].flags))
      return true;
  for (i = 0; i < RL_MAX_SITES; i++)
    if ((rl->pend.site_set[i] & ~rl->hdr.sites[i].flags) ||
        (rl->pend.site_clear[i] & rl->hdr.sites[i].flags))
      return true;
  for (i = 0; i < RL_MAX_SITES; i++)
    if (rl->hdr.sites[i].present && rl->pend.applied[i] > rl->hdr.sites[i].applied)
      return true;
  {
    /* The other copy still holds space the newest one released: write it
     * too (batched like any header write; at once for space waiters). */
    uint32_t d;
    if (rl_tail_of (rl, &rl->hdr_old, &d) < rl_tail_of (rl, &rl->hdr, &d))
      return true;
  }
  return false;
}

/* The header as it will be once the posted applied values are in. */
static struct rl_header
header_with_pending (struct replog *rl)
{
  struct rl_header h = rl->hdr;
  unsigned i;
  for (i = 0; i < RL_MAX_DEVICES; i++)
    if (h.devices[i].present)
      h.devices[i].flags = (uint8_t) ((h.devices[i].flags | rl->pend.dev_set[i]) &
                                      ~rl->pend.dev_clear[i]);
  for (i = 0; i < RL_MAX_SITES; i++) {
    if (h.sites[i].present)
      h.sites[i].flags = (uint8_t) ((h.sites[i].flags | rl->pend.site_set[i]) & ~rl->pend.site_clear[i]);
    if (h.sites[i].present && (rl->pend.dirty & (1u << i)))
      h.sites[i].mode = RL_MODE_DIRTY;
    else if (h.sites[i].present && (rl->pend.resume & (1u << i))) {
      h.sites[i].mode = RL_MODE_LOG;
      h.sites[i].applied = rl->pend.resume_applied[i];
      h.sites[i].flags |= RL_SITE_RESYNC;
    }
    else if (h.sites[i].present && h.sites[i].mode == RL_MODE_LOG &&
             rl->pend.applied[i] > h.sites[i].applied)
      h.sites[i].applied = rl->pend.applied[i];
  }
  return h;
}

static void
fail_log (struct replog *rl, const char *what)
{
  if (!rl->failed)
    rep_event (EV_LOG_FAILED, -1, NULL, "replog %s: %s failed: %m; the log is now FAILED: flushes "
               "fail with EIO until the instance is restarted", rl->path, what);
  rl->failed = true;
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_cond_broadcast (&rl->space_cv);
  wake_workers (rl);
}

static void sync_round_locked (struct replog *rl);

/* One sync round, called with the lock held; drops it during I/O.  Run by
 * the syncer, or by a writer waiting for durability when no round is
 * under way (one thread hop less on a synchronous write's path). */
static void
sync_round (struct replog *rl)
{
  while (rl->syncing && !rl->failed)     /* one round at a time */
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  if (rl->failed || (rl->committed_seq <= rl->durable_seq && !header_pending (rl)))
    return;                              /* the round we waited for did it all */
  rl->syncing = true;
  sync_round_locked (rl);
  rl->syncing = false;
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_cond_signal (&rl->syncer_cv);
}

static void
sync_round_locked (struct replog *rl)
{
  uint64_t c = rl->committed_seq;
  bool hdr = header_pending (rl);
  struct rl_header h = header_with_pending (rl);
  uint32_t dirty = rl->pend.dirty, resume = rl->pend.resume, lost = 0;
  unsigned i;
  int r = 0;

  if (hdr)
    mark_releases (rl, &h);              /* entries this header lets go */
  pthread_mutex_unlock (&rl->lock);
  /* Dirty-log bits set before this header (entries a returning site will
   * not get from the log, a site moved to dirty-log mode) are durable
   * before it. */
  if (hdr && rl->hooks.dl_sync_fn)
    lost = rl->hooks.dl_sync_fn (rl->hooks.dl_sync_opaque);
  /* A site whose dirty log could not be written: this header, which may
   * let entries go that only its bitmaps were to record, says instead
   * that every region of the site is to be copied after a restart.  A
   * site that is a consistent prefix in this header lacks nothing: its
   * bitmaps do not count, and the flag goes. */
  for (i = 0; i < RL_MAX_SITES; i++) {
    struct rl_site_rec *sr = &h.sites[i];
    if (!sr->present)
      continue;
    if (sr->mode == RL_MODE_LOG && !(sr->flags & (RL_SITE_RESYNC | RL_SITE_IN_DOUBT)))
      sr->flags &= (uint8_t) ~RL_SITE_DLOG_LOST;
    else if (lost & (1u << i))
      sr->flags |= RL_SITE_DLOG_LOST;
  }
  if (hdr)
    r = rl_header_write (rl, &h);
  if (r == 0) {
    pft_sync (rl->fd, 'S');
    r = fdatasync (rl->fd);
    if (r == 0)
      pft_sync (rl->fd, 'D');
  }
  pthread_mutex_lock (&rl->lock);
  if (r == -1) {
    fail_log (rl, hdr ? "writing the header" : "fdatasync");
    return;
  }
  rl->counters.syncs++;
  rep_debugc (REP_DBG_LOG, "replog: sync round: durable up to seq %" PRIu64 "%s", c,
              hdr ? ", header written" : "");
  if (c > rl->durable_seq) {
    rl->durable_seq = c;
    wake_workers (rl);
  }
  if (hdr) {
    rl->hdr_old = rl->hdr;
    rl->hdr = h;
    rl->pend.dirty &= ~dirty;
    rl->pend.resume &= ~resume;
    /* Flag requests the durable header now reflects are done with. */
    for (i = 0; i < RL_MAX_SITES; i++) {
      rl->pend.site_set[i] &= (uint8_t) ~h.sites[i].flags;
      rl->pend.site_clear[i] &= h.sites[i].flags;
      /* RL_SITE_DLOG_LOST was decided for this header, above. */
      rl->pend.site_set[i] &= (uint8_t) ~RL_SITE_DLOG_LOST;
      rl->pend.site_clear[i] &= (uint8_t) ~RL_SITE_DLOG_LOST;
    }
    for (i = 0; i < RL_MAX_DEVICES; i++) {
      rl->pend.dev_set[i] &= (uint8_t) ~h.devices[i].flags;
      rl->pend.dev_clear[i] &= h.devices[i].flags;
    }
    for (i = 0; i < RL_MAX_SITES; i++)
      if ((resume & (1u << i)) && rl->pend.applied[i] < h.sites[i].applied)
        rl->pend.applied[i] = h.sites[i].applied;
    rl->counters.header_writes++;
    recompute_tail (rl);
    pthread_cond_broadcast (&rl->space_cv);
  }
  pthread_cond_broadcast (&rl->durable_cv);
}

static void *
syncer_thread (void *arg)
{
  struct replog *rl = arg;
  uint64_t first_pending = 0;

  pthread_mutex_lock (&rl->lock);
  while (!rl->failed) {
    bool data = rl->committed_seq > rl->durable_seq;
    bool hdr = header_pending (rl);
    bool urgent = rl->waiters.flush || rl->waiters.header || rl->waiters.space;

    if (!data && !hdr) {
      if (rl->stopping)
        break;
      first_pending = 0;
      pthread_cond_wait (&rl->syncer_cv, &rl->lock);
      continue;
    }
    if (!urgent && !rl->stopping) {
      /* Background group commit: wait one interval for more to batch. */
      uint64_t now = mono_ns ();
      if (!first_pending)
        first_pending = now;
      if (now - first_pending < rl->commit_interval_ns) {
        uint64_t until = wall_ns () + (rl->commit_interval_ns - (now - first_pending));
        struct timespec ts = deadline_ts (until, 0);
        pthread_cond_timedwait (&rl->syncer_cv, &rl->lock, &ts);
        continue;
      }
    }
    first_pending = 0;
    sync_round (rl);
  }
  pthread_mutex_unlock (&rl->lock);
  return NULL;
}

int
replog_start (struct replog *rl)
{
  int e;
  if (rl->syncer_running)
    return 0;
  rl->stopping = false;
  e = pthread_create (&rl->syncer, NULL, syncer_thread, rl);
  if (e) {
    errno = e;
    rep_error ("replog: cannot start the syncer thread: %m");
    return -1;
  }
  rl->syncer_running = true;
  return 0;
}

void
replog_stop (struct replog *rl)
{
  if (!rl)
    return;
  pthread_mutex_lock (&rl->lock);
  rl->stopping = true;
  pthread_cond_broadcast (&rl->syncer_cv);
  pthread_cond_broadcast (&rl->space_cv);
  wake_workers (rl);
  pthread_cond_broadcast (&rl->durable_cv);
  pthread_mutex_unlock (&rl->lock);
  if (rl->syncer_running) {
    pthread_join (rl->syncer, NULL);
    rl->syncer_running = false;
  }
  /* Final header: record what was posted, and whether the log is drained. */
  pthread_mutex_lock (&rl->lock);
  if (!rl->failed) {
    bool drained = true;
    unsigned i;
    for (i = 0; i < RL_MAX_SITES; i++)
      if (rl->hdr.sites[i].present && rl->hdr.sites[i].mode == RL_MODE_LOG &&
          rl->pend.applied[i] < rl->committed_seq)
        drained = false;
    if (header_pending (rl) || drained != (rl->hdr.clean == 1)) {
      struct rl_header h = header_with_pending (rl);
      h.clean = drained;
      if (rl_header_write (rl, &h) == -1 || rl_sync (rl->fd) == -1)
        fail_log (rl, "writing the final header");
      else {
        rl->hdr_old = rl->hdr;
        rl->hdr = h;
      }
    }
  }
  pthread_mutex_unlock (&rl->lock);
}

/* Stop (if started), then unmap, close and free (replog.c). */
void
replog_close (struct replog *rl)
{
  if (!rl)
    return;
  if (rl->syncer_running)
    replog_stop (rl);
  rl_free (rl);
}

/* ---- writers ----------------------------------------------------------------- */

/* Descriptors are stored through the mapping: the power-loss trace
 * records each one once it is complete (pftrace.h). */
static void
desc_traced (struct replog *rl, const struct rl_desc *d)
{
  pft_write (rl->fd, d, sizeof *d,
             rl->base + rl->hdr.desc_offset + (uint64_t) ((const uint8_t *) d - rl->map));
}

/* Where an entry of nb blocks would start, or UINT64_MAX if it does not fit now. */
static uint64_t
place (struct replog *rl, uint64_t nb)
{
  uint64_t pos = rl->data_head, tailpos;

  if (rl->next_seq - rl->tail_seq >= rl->ndesc)
    return UINT64_MAX;
  if (nb == 0)
    return pos;
  if (pos % rl->data_blocks + nb > rl->data_blocks)
    pos += rl->data_blocks - pos % rl->data_blocks;      /* skip to the wrap */
  tailpos = rl->tail_seq < rl->next_seq ? rl->slot_pos[slot_of (rl, rl->tail_seq)] : rl->data_head;
  if (pos + nb - tailpos > rl->data_blocks)
    return UINT64_MAX;
  return pos;
}

/* Wait, with the lock held, until an entry of nb blocks fits; its
 * position in *pos.  -1 with errno (EIO: the log failed, or safety rule
 * 4's wait ran out; ESHUTDOWN: stopping) and the lock released. */
static int
wait_for_room (struct replog *rl, uint64_t nb, uint64_t *pos)
{
  bool waited = false;
  uint64_t wait_start = 0;

  for (;;) {
    if (rl->failed || rl->stopping) {
      pthread_mutex_unlock (&rl->lock);
      errno = rl->failed ? EIO : ESHUTDOWN;
      return -1;
    }
    if ((*pos = place (rl, nb)) != UINT64_MAX)
      return 0;
    /* Full: wait for the workers to drain (they checkpoint when they see
     * waiters.space) and the syncer to record it. */
    if (!waited)
      rl->counters.space_waits++;
    if (!waited)
      wait_start = mono_ns ();
    waited = true;
    rl->waiters.space++;
    pthread_cond_broadcast (&rl->syncer_cv);
    wake_workers (rl);
    if (rl->only_copy_wait_ns) {
      /* Safety rule 4: nothing can release the space; do not wait for ever. */
      uint64_t now = mono_ns ();
      uint64_t until = wall_ns () + (rl->only_copy_wait_ns > now - wait_start ?
                                                  rl->only_copy_wait_ns - (now - wait_start) : 0);
      struct timespec ts = deadline_ts (until, 0);
      if (now - wait_start >= rl->only_copy_wait_ns) {
        rl->waiters.space--;
        pthread_mutex_unlock (&rl->lock);
        rep_error ("replog: the log is full and holds the only copy of entries whose local leg "
                   "failed (no remote site has them): the write fails");
        errno = EIO;
        return -1;
      }
      pthread_cond_timedwait (&rl->space_cv, &rl->lock, &ts);
    }
    else
      pthread_cond_wait (&rl->space_cv, &rl->lock);
    rl->waiters.space--;
  }
}

int
replog_reserve (struct replog *rl, unsigned dev, int op, int flags,
                uint64_t offset, uint32_t length, uint64_t *seqp, void **payload)
{
  uint64_t nb = op == RL_OP_WRITE ? ((uint64_t) length + RL_BLOCK - 1) / RL_BLOCK : 0;
  uint64_t pos, seq;
  struct rl_desc *d;

  if (nb > rl->data_blocks / 2) {
    errno = EINVAL;
    rep_error ("replog: a %u-byte request does not fit this log", length);
    return -1;
  }
  pthread_mutex_lock (&rl->lock);
  if (wait_for_room (rl, nb, &pos) == -1)
    return -1;
  seq = rl->next_seq++;
  rl->data_head = pos + nb;
  rl->slot_committed[slot_of (rl, seq)] = 0;
  rl->slot_pos[slot_of (rl, seq)] = pos;
  d = desc_at (rl, seq);
  memset (d, 0, sizeof *d);               /* magic 0: invalid until commit */
  d->op = (uint8_t) op;
  d->flags = (uint8_t) flags;
  d->device = (uint16_t) dev;
  d->seq = seq;
  d->offset = offset;
  d->length = length;
  d->nblocks = (uint32_t) nb;
  d->data_pos = pos;
  d->epoch = rl->epoch;
  if (op == RL_OP_BARRIER) {
    rl->epoch++;
    rl->dirty_since_barrier = false;
  }
  else
    rl->dirty_since_barrier = true;
  pthread_mutex_unlock (&rl->lock);

  /* site_oldest_age_ms reads it without the lock (0: being reserved) */
  __atomic_store_n (&d->time_ns, wall_ns (), __ATOMIC_RELAXED);
  desc_traced (rl, d);
  *seqp = seq;
  if (payload)
    *payload = nb ? rl->data_ring + (pos % rl->data_blocks) * RL_BLOCK : NULL;
  return 0;
}

int
replog_fill (struct replog *rl, uint64_t seq, const void *buf)
{
  static const uint8_t zero[RL_BLOCK];
  struct rl_desc *d = desc_at (rl, seq);
  uint64_t off = rl->data_file_off + (d->data_pos % rl->data_blocks) * RL_BLOCK;
  uint32_t slack = d->length % RL_BLOCK ? RL_BLOCK - d->length % RL_BLOCK : 0;
  struct iovec iov[2] = { { (void *) buf, d->length }, { (void *) zero, slack } };
  size_t want = (size_t) d->length + slack, done = 0;

  /* pwritev into the log file's page cache: the same pages the mapping
   * shows, but never written through it, so writeback does not have to
   * write-protect them in every thread's page tables. */
  while (done < want) {
    ssize_t r = pwritev (rl->fd, iov, slack ? 2 : 1, (off_t) (off + done));
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      int e = r == 0 ? EIO : errno;
      /* The entry must never ship: fail the log (nothing becomes durable
       * from now on, flushes fail with EIO). */
      pthread_mutex_lock (&rl->lock);
      errno = e;
      fail_log (rl, "writing a payload");
      pthread_mutex_unlock (&rl->lock);
      errno = e;
      return -1;
    }
    done += (size_t) r;
    if (done < want) {                     /* short: advance the iovecs */
      size_t skip = (size_t) r;
      if (skip >= iov[0].iov_len) {
        skip -= iov[0].iov_len;
        iov[0] = iov[1];
        iov[0].iov_base = (uint8_t *) iov[0].iov_base + skip;
        iov[0].iov_len -= skip;
        slack = 0;
      }
      else {
        iov[0].iov_base = (uint8_t *) iov[0].iov_base + skip;
        iov[0].iov_len -= skip;
      }
    }
  }
  pft_write (rl->fd, buf, d->length, off);
  pft_zero (rl->fd, off + d->length, slack);
  {
    struct rl_desc tmp = *d;
    tmp.magic = RL_DESC_MAGIC;
    rl->slot_crc[slot_of (rl, seq)] = replog_desc_crc (rl->salt, &tmp, buf);
  }
  return 0;
}

void
replog_commit (struct replog *rl, uint64_t seq)
{
  struct rl_desc *d = desc_at (rl, seq);

  d->magic = RL_DESC_MAGIC;
  d->crc = d->op == RL_OP_WRITE ? rl->slot_crc[slot_of (rl, seq)] : replog_desc_crc (rl->salt, d, NULL);

  desc_traced (rl, d);
  pthread_mutex_lock (&rl->lock);
  rl->slot_committed[slot_of (rl, seq)] = 1;
  if (seq == rl->committed_seq + 1) {
    while (rl->committed_seq + 1 < rl->next_seq &&
           rl->slot_committed[slot_of (rl, rl->committed_seq + 1)])
      rl->committed_seq++;
    pthread_cond_signal (&rl->syncer_cv);
  }
  pthread_mutex_unlock (&rl->lock);
}

int
replog_barrier (struct replog *rl, int flags, uint64_t *seq)
{
  bool need;

  pthread_mutex_lock (&rl->lock);
  need = rl->dirty_since_barrier;
  *seq = rl->next_seq - 1;
  pthread_mutex_unlock (&rl->lock);
  if (!need)
    return 0;
  if (replog_reserve (rl, 0, RL_OP_BARRIER, flags, 0, 0, seq, NULL) == -1)
    return -1;
  replog_commit (rl, *seq);
  return 0;
}

int
replog_wait_durable (struct replog *rl, uint64_t seq)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  rl->waiters.flush++;
  while (rl->durable_seq < seq && !rl->failed) {
    if (!rl->syncing && rl->syncer_running && !rl->stopping && rl->committed_seq >= seq) {
      sync_round (rl);                   /* do it ourselves: group commit still */
      continue;
    }
    pthread_cond_signal (&rl->syncer_cv);
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  }
  rl->waiters.flush--;
  if (rl->failed) {
    errno = EIO;
    r = -1;
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

int
replog_wait_durable_until (struct replog *rl, uint64_t seq, uint64_t until_ns)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  rl->waiters.flush++;                   /* the syncer syncs at once */
  while (rl->durable_seq < seq && !rl->failed) {
    uint64_t now = mono_ns ();
    struct timespec ts;
    if (now >= until_ns) {
      r = 1;
      break;
    }
    pthread_cond_signal (&rl->syncer_cv);
    ts = deadline_ts (wall_ns () + (until_ns - now), 0);     /* durable_cv: CLOCK_REALTIME */
    pthread_cond_timedwait (&rl->durable_cv, &rl->lock, &ts);
  }
  rl->waiters.flush--;
  if (rl->failed) {
    errno = EIO;
    r = -1;
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

/* ---- workers ----------------------------------------------------------------- */

uint64_t
replog_wait_work (struct replog *rl, uint64_t after, unsigned timeout_ms)
{
  uint64_t d;

  pthread_mutex_lock (&rl->lock);
  if (rl->durable_seq <= after && !rl->stopping && !rl->failed && timeout_ms) {
    struct timespec ts = deadline_ts (wall_ns (), timeout_ms);
    pthread_cond_timedwait (&rl->work_cv, &rl->lock, &ts);
  }
  d = rl->durable_seq;
  pthread_mutex_unlock (&rl->lock);
  return d;
}

void
replog_post_applied (struct replog *rl, unsigned site, uint64_t seq)
{
  pthread_mutex_lock (&rl->lock);
  if (seq > rl->pend.applied[site] && rl->hdr.sites[site].mode == RL_MODE_LOG &&
      !(rl->pend.dirty & (1u << site))) {
    rl->pend.applied[site] = seq;
    pthread_cond_signal (&rl->syncer_cv);
  }
  pthread_mutex_unlock (&rl->lock);
}

/* What a header waiter waits for, checked under the lock. */
enum hdr_goal { HDR_APPLIED, HDR_DIRTY, HDR_SITE_FLAGS, HDR_RESUMED, HDR_DEV_FLAGS };

/* The goal of a flag change, for wait_header: the changed bits << 8 | their new values. */
static uint64_t
flags_goal (uint8_t set, uint8_t clear)
{
  return ((uint64_t) (set | clear) << 8) | (uint8_t) (set & ~clear);
}

static bool
hdr_reached (struct replog *rl, enum hdr_goal g, unsigned site, uint64_t arg)
{
  const struct rl_site_rec *s = &rl->hdr.sites[site];
  switch (g) {
  case HDR_APPLIED:              /* (a site leaving log mode never gets there) */
    return s->applied >= arg || s->mode != RL_MODE_LOG || (rl->pend.dirty & (1u << site));
  case HDR_DIRTY:
    return s->mode == RL_MODE_DIRTY;
  case HDR_SITE_FLAGS:           /* arg: flags_goal () */
    return (s->flags & (arg >> 8)) == (arg & 0xff);
  case HDR_RESUMED:
    return !(rl->pend.resume & (1u << site));
  case HDR_DEV_FLAGS:            /* site = device; arg: flags_goal () */
    return (rl->hdr.devices[site].flags & (arg >> 8)) == (arg & 0xff);
  }
  return true;
}

/* Wait until a durable header reaches the goal (the syncer writes it at
 * once: waiters.header makes it urgent).  -1/EIO if the log failed. */
static int
wait_header (struct replog *rl, enum hdr_goal g, unsigned site, uint64_t arg)
{
  int r = 0;

  rl->waiters.header++;
  pthread_cond_signal (&rl->syncer_cv);
  while (!hdr_reached (rl, g, site, arg) && !rl->failed)
    pthread_cond_wait (&rl->durable_cv, &rl->lock);
  rl->waiters.header--;
  if (rl->failed) {
    errno = EIO;
    r = -1;
  }
  return r;
}

/* The small calls below (replog_wait_applied, replog_applied,
 * replog_site_flags, replog_dev_flags, ...) are alike on purpose: each takes
 * the lock, reads or waits for one thing of the header, and lets go. */
int
replog_wait_applied (struct replog *rl, unsigned site, uint64_t seq)
{
  int r;
  pthread_mutex_lock (&rl->lock);
  r = wait_header (rl, HDR_APPLIED, site, seq);
  pthread_mutex_unlock (&rl->lock);
  return r;
}

uint64_t
replog_applied (struct replog *rl, unsigned site)
{
  uint64_t a;
  pthread_mutex_lock (&rl->lock);
  a = rl->hdr.sites[site].applied;
  pthread_mutex_unlock (&rl->lock);
  return a;
}

bool
replog_space_wanted (struct replog *rl)
{
  bool w;
  pthread_mutex_lock (&rl->lock);
  w = rl->waiters.space > 0 || rl->stopping;
  pthread_mutex_unlock (&rl->lock);
  return w;
}

void
replog_get_stats (struct replog *rl, struct replog_stats *st)
{
  pthread_mutex_lock (&rl->lock);
  st->next_seq = rl->next_seq;
  st->committed_seq = rl->committed_seq;
  st->durable_seq = rl->durable_seq;
  st->tail_seq = rl->tail_seq;
  st->ndesc = rl->ndesc;
  st->data_blocks = rl->data_blocks;
  st->data_used_blocks = rl->data_head -
    (rl->tail_seq < rl->next_seq ? rl->slot_pos[slot_of (rl, rl->tail_seq)] : rl->data_head);
  st->epoch = rl->epoch;
  st->syncs = rl->counters.syncs;
  st->header_writes = rl->counters.header_writes;
  st->space_waits = rl->counters.space_waits;
  st->size = rl->hdr.log_size;
  st->failed = rl->failed;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_get_header (struct replog *rl, struct rl_header *h)
{
  pthread_mutex_lock (&rl->lock);
  *h = rl->hdr;
  pthread_mutex_unlock (&rl->lock);
}

/* ---- site modes ------------------------------------------------------------- */

void
replog_set_release_fn (struct replog *rl, replog_release_fn fn, void *opaque)
{
  pthread_mutex_lock (&rl->lock);
  rl->hooks.release_fn = fn;
  rl->hooks.release_opaque = opaque;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_add_waker (struct replog *rl, int fd)
{
  pthread_mutex_lock (&rl->lock);
  if (rl->hooks.nwakers < RL_MAX_SITES)
    rl->hooks.wakers[rl->hooks.nwakers++] = fd;
  pthread_mutex_unlock (&rl->lock);
}

void
replog_remove_waker (struct replog *rl, int fd)
{
  unsigned i;
  pthread_mutex_lock (&rl->lock);
  for (i = 0; i < rl->hooks.nwakers; i++)
    if (rl->hooks.wakers[i] == fd) {
      rl->hooks.wakers[i] = rl->hooks.wakers[--rl->hooks.nwakers];
      break;
    }
  pthread_mutex_unlock (&rl->lock);
}

int
replog_site_mode (struct replog *rl, unsigned site)
{
  int m;
  pthread_mutex_lock (&rl->lock);
  m = rl->hdr.sites[site].mode;
  pthread_mutex_unlock (&rl->lock);
  return m;
}

int
replog_set_site_dirty (struct replog *rl, unsigned site)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  if (rl->hdr.sites[site].mode != RL_MODE_DIRTY) {
    rl->pend.dirty |= 1u << site;
    if (rl->syncer_running)              /* else: the syncer's first round */
      r = wait_header (rl, HDR_DIRTY, site, 0);
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

uint8_t
replog_site_flags (struct replog *rl, unsigned site)
{
  uint8_t f;
  pthread_mutex_lock (&rl->lock);
  f = rl->hdr.sites[site].flags;
  pthread_mutex_unlock (&rl->lock);
  return f;
}

bool
replog_site_holds_full_log (struct replog *rl, unsigned site)
{
  bool r;
  pthread_mutex_lock (&rl->lock);
  r = rl->waiters.space > 0 && rl->hdr.sites[site].mode == RL_MODE_LOG &&
      rl->hdr.sites[site].applied + 1 <= rl->tail_seq;
  pthread_mutex_unlock (&rl->lock);
  return r;
}

/* Flags of a site or a device (goal HDR_SITE_FLAGS or HDR_DEV_FLAGS, index
 * i): the change is pending for the next header write (the later of two
 * changes to one flag wins), and durable when this returns 0. */
static int
change_flags (struct replog *rl, uint8_t *pset, uint8_t *pclear, enum hdr_goal g, unsigned i,
              uint8_t set, uint8_t clear)
{
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  pclear[i] = (uint8_t) ((pclear[i] & ~set) | clear);
  pset[i] = (uint8_t) ((pset[i] & ~clear) | set);
  if (rl->syncer_running)
    r = wait_header (rl, g, i, flags_goal (set, clear));
  pthread_mutex_unlock (&rl->lock);
  return r;
}

int
replog_change_site_flags (struct replog *rl, unsigned site, uint8_t set, uint8_t clear)
{
  return change_flags (rl, rl->pend.site_set, rl->pend.site_clear, HDR_SITE_FLAGS, site, set, clear);
}

int
replog_site_resume (struct replog *rl, unsigned site, replog_release_fn mark, void *opaque,
                    uint64_t *start)
{
  const struct rl_site_rec *s = &rl->hdr.sites[site];
  uint64_t seq, from;
  int r = 0;

  pthread_mutex_lock (&rl->lock);
  if (rl->failed) {
    pthread_mutex_unlock (&rl->lock);
    errno = EIO;
    return -1;
  }
  if (s->mode == RL_MODE_LOG && !(rl->pend.dirty & (1u << site))) {
    *start = s->applied + 1;             /* in log mode already */
    pthread_mutex_unlock (&rl->lock);
    return 0;
  }
  /* Entries still in the log that the site lacks: from now on they are
   * its dirty logs' to cover; everything from `start` on comes from the
   * log, in order. */
  *start = rl->next_seq;
  from = rl->tail_seq > s->applied ? rl->tail_seq : s->applied + 1;
  for (seq = from; seq < rl->next_seq; seq++) {
    const struct rl_desc *d = desc_at (rl, seq);
    if (d->seq == seq && d->op != RL_OP_BARRIER)
      mark (opaque, 1u << site, d);
  }
  rl->pend.resume_applied[site] = rl->next_seq - 1;
  rl->pend.resume |= 1u << site;
  rl->pend.dirty &= ~(1u << site);    /* everything after applied is marked */
  rl->pend.site_clear[site] &= (uint8_t) ~RL_SITE_RESYNC;
  if (rl->syncer_running)
    r = wait_header (rl, HDR_RESUMED, site, 0);
  if (r == 0 && s->mode != RL_MODE_LOG) {
    errno = EAGAIN;                      /* overtaken by a move to dirty-log mode */
    r = -1;
  }
  pthread_mutex_unlock (&rl->lock);
  return r;
}

void
replog_set_dirtylog_sync (struct replog *rl, uint32_t (*fn) (void *), void *opaque)
{
  pthread_mutex_lock (&rl->lock);
  rl->hooks.dl_sync_fn = fn;
  rl->hooks.dl_sync_opaque = opaque;
  pthread_mutex_unlock (&rl->lock);
}

uint8_t
replog_dev_flags (struct replog *rl, unsigned dev)
{
  uint8_t f;
  pthread_mutex_lock (&rl->lock);
  f = dev < RL_MAX_DEVICES ? rl->hdr.devices[dev].flags : 0;
  pthread_mutex_unlock (&rl->lock);
  return f;
}

int
replog_change_dev_flags (struct replog *rl, unsigned dev, uint8_t set, uint8_t clear)
{
  return change_flags (rl, rl->pend.dev_set, rl->pend.dev_clear, HDR_DEV_FLAGS, dev, set, clear);
}

void
replog_set_only_copy_wait (struct replog *rl, uint64_t ms)
{
  pthread_mutex_lock (&rl->lock);
  rl->only_copy_wait_ns = ms * 1000000u;
  pthread_cond_broadcast (&rl->space_cv);     /* waiters re-check */
  pthread_mutex_unlock (&rl->lock);
}
