/* worker-local.c: the local leg out of service, the worker side (site 0
 * for the local leg, a remote site for serving the device meanwhile).
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
 *
 * Owns: the transitions of a local leg between in service, out of
 * service (LEG_FAILED + vdev.local_out), served elsewhere (vdev.read_site)
 * and being restored (LEG_RESYNCING); RL_DEV_LOCAL_OUT in the header;
 * the log's only-copy wait.
 * Invariants: the read index is reset (vdev_overlay_reset, under ov_lock)
 * whenever its meaning changes (which leg it is relative to); a leg comes
 * back only once a checkpoint flushed it after its rewrite (safety rule
 * 13).
 * May call: worker-int.h helpers, replicator.h/replog.h/bitmap functions.
 * Nothing of the other worker files: it is the lowest piece.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "event.h"
#include "leg-label.h"
#include "replicator.h"
#include "report.h"
#include "worker-int.h"

/* Entry seq (after done) was applied here already, out of order. */
static bool
applied_here (void *opaque, uint64_t seq)
{
  struct worker *w = opaque;
  return seq > w->done && seq < w->next && w->cdone[seq % w->ndesc];
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
      !__atomic_load_n (&d->read_site, __ATOMIC_ACQUIRE) && !d->local->stale;
  }
  replog_set_only_copy_wait (r->rl, any ? r->sites[0].cfg->disconnect_timeout_ms : 0);
}

/* The local leg l failed (op, errno e): take it out of service.  True if
 * a remote site serves the device, so its entries can be skipped. */
bool
local_fail (struct worker *w, struct leg *l, const char *op, int e)
{
  struct vdev *d = l->dev;
  unsigned srv;

  if (d->local_out && l->state == LEG_RESYNCING) {
    /* The leg being restored failed again: out of service once more. */
    rep_error ("device '%s': local leg %s failed again during its restore (%s: %s)",
               d->name, l->cfg->path, op, strerror (e));
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    bitmap_set_all (l->dirty_log);
    return d->read_site != 0;
  }
  if (d->local_out)
    return d->read_site != 0;
  __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
  pthread_mutex_lock (&d->ov_lock);
  d->local_out = true;                   /* site 0 no longer trims the index */
  pthread_mutex_unlock (&d->ov_lock);
  if (replog_change_dev_flags (w->r->rl, d->index, RL_DEV_LOCAL_OUT, 0) == -1)
    rep_error ("device '%s': could not record the failed local leg in the log header: %m",
               d->name);
  srv = vdev_pick_read_site (d);
  if (srv) {
    struct site *rs = &w->r->sites[srv];
    rep_event (EV_LOCAL_FAILED, 0, d->name, "local leg %s failed (%s: %s): out of service; reads "
               "and writes continue through site %u; restore it with 'replctl restore %s --from %u'",
               l->cfg->path, op, strerror (e), srv, d->name, srv);
    __atomic_fetch_or (&rs->read_site_req, 1u << d->index, __ATOMIC_ACQ_REL);
    worker_wake (rs);
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
void
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
  w->rw.pending = true;
  __atomic_add_fetch (&w->site->legs_gen, 1, __ATOMIC_ACQ_REL);   /* verify looks again */
  publish_done (w);                      /* the legs hold the applied sequence, no more */
  l->sync_failed = true;
  l->written_ok = false;
  if (l->site != 0) {
    __atomic_store_n (&l->state, LEG_FAILED, __ATOMIC_RELAXED);
    return;
  }
  pthread_mutex_lock (&d->ov_lock);
  if (d->read_site == 0 && vdev_overlay_reset (d, w->posted, NULL, NULL) == -1)
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
bool
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
        __atomic_load_n (&d->read_site, __ATOMIC_ACQUIRE) != 0)
      continue;
    if (!l->written_ok) {
      all = false;                       /* its writes still fail */
      continue;
    }
    pthread_mutex_lock (&d->ov_lock);
    if (d->read_site != 0 || vdev_overlay_reset (d, w->done, applied_here, w) == -1) {
      pthread_mutex_unlock (&d->ov_lock);
      all &= d->read_site != 0;        /* out of memory: at the next checkpoint */
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
void
take_reads (struct worker *w, uint32_t mask)
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
    __atomic_store_n (&d->read_site, s->id, __ATOMIC_RELEASE);
    pthread_mutex_unlock (&d->ov_lock);
    __atomic_fetch_or (&s->read_site_devs, 1u << i, __ATOMIC_ACQ_REL);
    only_copy_update (w->r);             /* a remote copy exists now */
    rep_event (EV_SERVED_FROM, (int) s->id, d->name, "reads are served from this site (its leg "
               "and the log entries it has not applied yet)");
  }
}

/* Site 0: restored local legs go back into service. */
void
restore_finish (struct worker *w)
{
  unsigned i;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    struct vdev *d = l->dev;
    unsigned from = d->read_site;
    if (l->state != LEG_RESYNCING)
      continue;
    /* From now on the index means "not yet on the local leg" again. */
    pthread_mutex_lock (&d->ov_lock);
    if (vdev_overlay_reset (d, w->done, applied_here, w) == -1) {
      pthread_mutex_unlock (&d->ov_lock);
      rep_error ("device '%s': restore: out of memory; retrying", d->name);
      return;
    }
    __atomic_store_n (&d->read_site, 0, __ATOMIC_RELEASE);
    d->local_out = false;
    pthread_mutex_unlock (&d->ov_lock);
    if (from)
      __atomic_fetch_and (&w->r->sites[from].read_site_devs, ~(1u << d->index), __ATOMIC_ACQ_REL);
    /* The leg is the device's again: its label says so first. */
    leglabel_write (l, LBL_CONSISTENT, w->done, 0);
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

/* Site 0: restore the local legs of the devices in mask (replctl
 * restore): the leg opened again, every region copied from the device
 * view (the serving site's leg and the log), new entries applied to it.
 * True when the caller is to begin a resync for it (resync_begin); with
 * one under way (another leg's restore), its regions join that one's
 * total (a failed leg was not in it: resyncable). */
bool
restore_begin (struct worker *w, uint32_t mask)
{
  unsigned i;
  uint64_t regions = 0;
  bool any = false;

  for (i = 0; i < w->nlegs; i++) {
    struct leg *l = w->legs[i];
    if (!(mask & (1u << l->dev->index)) || l->reopen_fd < 0)
      continue;
    /* The new file takes the old one's descriptor number (dup3 closes the
     * old file at once): a write prepared on the ring with that number and
     * not submitted yet reaches the new file, never a closed descriptor or
     * a file that another thread's open got the number of (a close, then
     * l->fd = reopen_fd, left that window: the restored leg's writes
     * failed with EBADF in test-local-failover 2b). */
    if (dup3 (l->reopen_fd, l->fd, O_CLOEXEC) == -1) {
      rep_error ("device '%s': restore of the local leg %s: %m", l->dev->name, l->cfg->path);
      close (l->reopen_fd);
      l->reopen_fd = -1;
      continue;
    }
    close (l->reopen_fd);                /* the old file and our lock on it are gone ... */
    l->reopen_fd = -1;
    if (!l->is_blk && flock (l->fd, LOCK_EX | LOCK_NB) == -1)   /* ... taken on the new one */
      rep_warn ("device '%s': local leg %s: cannot lock it again (%m): another program may "
                "open it", l->dev->name, l->cfg->path);
    l->direct = (fcntl (l->fd, F_GETFL) & O_DIRECT) != 0;
    l->zero_range_ok = l->punch_ok = true;
    bitmap_set_all (l->dirty_log);
    regions += l->dirty_log->nbits;
    __atomic_store_n (&l->state, LEG_RESYNCING, __ATOMIC_RELAXED);
    w->rs.cursor[i] = 0;
    any = true;
    rep_event (EV_RESTORE_STARTED, 0, l->dev->name, "restoring the local leg %s from site %u",
               l->cfg->path, l->dev->read_site);
  }
  if (!any)
    return false;
  if (site_state_is_resync (site_state (w->site))) {
    __atomic_add_fetch (&w->site->resync.regions, regions, __ATOMIC_RELAXED);
    return false;
  }
  return true;
}

/* Site 0: a client read failed on a local leg (rdev_read_view). */
void
local_read_failures (struct worker *w)
{
  struct replicator *r = w->r;
  uint32_t fr = __atomic_exchange_n (&w->site->fail_req, 0, __ATOMIC_ACQ_REL);
  size_t i;
  for (i = 0; i < r->ndevs; i++)
    if ((fr & (1u << i)) && !r->devs[i].local_out)
      local_fail (w, r->devs[i].local, "read", EIO);
}

/* Site 0, now and then: a failed local leg nobody serves: is a remote
 * site up to date now? */
void
local_pick_read_sites (struct worker *w, uint64_t now)
{
  struct replicator *r = w->r;
  size_t i;
  w->lo.last_pick_ns = now;
  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    unsigned srv;
    if (!d->local_out || d->read_site || !(srv = vdev_pick_read_site (d)) ||
        (__atomic_load_n (&r->sites[srv].read_site_req, __ATOMIC_ACQUIRE) & (1u << i)))
      continue;
    rep_event (EV_SERVED_FROM, (int) srv, d->name, "up to date now: this site serves the device");
    __atomic_fetch_or (&r->sites[srv].read_site_req, 1u << i, __ATOMIC_ACQ_REL);
    worker_wake (&r->sites[srv]);
  }
}
