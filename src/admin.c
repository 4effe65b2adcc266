/* admin.c: the administrator's commands (layer 5; replctl through the
 * control socket): resync, pause and resume, policy, restore of a local
 * leg, planned switchover.
 *
 * Owns: checking a request and handing it to the site's worker (request
 * fields of struct site, then worker_poke); nothing here changes a site's
 * state itself, except the operator's pause flag (site_set_paused), and
 * the switchover's read-only state (r->handover) and label writes.
 * Calls down only: the view (device lookup), the site state machine, the
 * workers (worker_poke), the configuration's parsers, the log (barrier,
 * applied seqs), leg labels (leglabel_write), events.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "event.h"
#include "leg-label.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

static struct site *
remote_site (struct replicator *r, unsigned id, char *why, size_t len)
{
  if (id >= CFG_MAX_SITES || !r->sites[id].cfg) {
    snprintf (why, len, "no site %u in this instance", id);
    return NULL;
  }
  if (id == 0) {
    snprintf (why, len, "site 0 holds the local legs: only remote sites (1..%d) can be %s",
              CFG_MAX_SITES - 1, "named here");
    return NULL;
  }
  return &r->sites[id];
}

int
replicator_resync (struct replicator *r, const char *device, unsigned site, bool full,
                   char *why, size_t len)
{
  struct site *s = remote_site (r, site, why, len);
  struct vdev *d;
  size_t j;
  bool has_leg = false;
  enum site_state st;

  if (!s)
    return -1;
  if (!(d = replicator_find (r, device))) {
    snprintf (why, len, "no device '%s' in this instance", device);
    return -1;
  }
  for (j = 0; j < d->nlegs; j++)
    has_leg |= d->legs[j].site == site;
  if (!has_leg) {
    snprintf (why, len, "device '%s' has no leg at site %u", device, site);
    return -1;
  }
  if (!s->running) {
    snprintf (why, len, "site %u is not running", site);
    return -1;
  }
  st = site_state (s);
  if (full)
    __atomic_fetch_or (&s->resync_full_devs, 1u << d->index, __ATOMIC_RELEASE);
  else if (!site_state_is_dirty_log (st) && !site_state_is_resync (st) && !site_dirty_regions (s)) {
    snprintf (why, len, "site %u is in log mode with nothing to copy (use --full to copy "
              "every region of device '%s' again)", site, device);
    return -1;
  }
  __atomic_store_n (&s->resync_now, true, __ATOMIC_RELEASE);
  worker_poke (s);
  rep_info ("site %u: %s resync of device '%s' requested", site, full ? "full" : "a", device);
  return 0;
}

int
replicator_discard (struct replicator *r, unsigned site, char *why, size_t len)
{
  struct site *s = remote_site (r, site, why, len);
  unsigned split = 0;
  size_t i, j;

  if (!s)
    return -1;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      pthread_mutex_lock (&l->lb.lock);
      split += l->site == site && l->lb.refused && l->lb.cls == LC_SPLIT;
      pthread_mutex_unlock (&l->lb.lock);
    }
  if (!split) {
    snprintf (why, len, "site %u has no leg in split brain (status shows each leg's label)", site);
    return -1;
  }
  __atomic_store_n (&s->discard_split, true, __ATOMIC_RELEASE);
  rep_event (EV_LEG_LABELLED, (int) site, NULL, "split brain: the administrator discards the "
             "changes of site %u: its legs in split brain become copies of this primary at "
             "their next connection", site);
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++)
      if (r->devs[i].legs[j].site == site && r->devs[i].legs[j].remote)
        rlink_want (&r->devs[i].legs[j].link);     /* try again now */
  return 0;
}

int
replicator_pause (struct replicator *r, unsigned site, bool pause, char *why, size_t len)
{
  struct site *s = remote_site (r, site, why, len);
  if (!s)
    return -1;
  if (site_set_paused (s, pause) == pause) {
    snprintf (why, len, pause ? "site %u is paused already" : "site %u is not paused", site);
    return -1;
  }
  worker_poke (s);
  pthread_mutex_lock (&s->lock);
  pthread_cond_broadcast (&s->cv);          /* sync clients stop waiting for it */
  pthread_mutex_unlock (&s->lock);
  return 0;
}

int
replicator_set_policy (struct replicator *r, unsigned site, const char *policy,
                       const char *fall_behind, char *why, size_t len)
{
  struct site *s = remote_site (r, site, why, len);
  enum cfg_fall_behind fb = FB_NONE;
  uint64_t fbv = 0;
  const char *e;
  enum cfg_policy p;
  char b[64];

  if (!s)
    return -1;
  if (!strcmp (policy, "sync"))
    p = POLICY_SYNC;
  else if (!strcmp (policy, "async"))
    p = POLICY_ASYNC;
  else {
    snprintf (why, len, "policy '%s': expected sync or async", policy);
    return -1;
  }
  if (fall_behind && cfg_parse_fall_behind (fall_behind, &fb, &fbv, &e) == -1) {
    snprintf (why, len, "fall-behind '%s': %s", fall_behind, e);
    return -1;
  }
  if (fall_behind) {
    __atomic_store_n (&s->fall_behind_value, fbv, __ATOMIC_RELAXED);
    __atomic_store_n (&s->fall_behind, fb, __ATOMIC_RELEASE);
  }
  __atomic_store_n (&s->policy, p, __ATOMIC_RELEASE);
  pthread_mutex_lock (&s->lock);
  pthread_cond_broadcast (&s->cv);          /* waiters re-check the new policy */
  pthread_mutex_unlock (&s->lock);
  cfg_format_fall_behind (s->fall_behind, s->fall_behind_value, b, sizeof b);
  rep_info ("site %u: policy now %s, fall_behind %s", site, policy, b);
  return 0;
}

int
replicator_restore (struct replicator *r, const char *device, unsigned site, char *why,
                    size_t len)
{
  struct vdev *d = replicator_find (r, device);
  struct leg *l;
  struct stat st;
  uint64_t size = 0;
  int fd, flags = O_RDWR | O_CLOEXEC;

  if (!d) {
    snprintf (why, len, "no device '%s' in this instance", device);
    return -1;
  }
  l = d->local;
  if (!d->local_out) {
    snprintf (why, len, "the local leg of device '%s' is in service: nothing to restore", device);
    return -1;
  }
  if (!d->read_site) {
    snprintf (why, len, "no remote site serves device '%s' (none is up to date): nothing to "
              "restore from", device);
    return -1;
  }
  if (site != d->read_site) {
    snprintf (why, len, "device '%s' is served from site %u: restore from that site", device,
              d->read_site);
    return -1;
  }
  if (l->state == LEG_RESYNCING || l->reopen_fd >= 0) {
    snprintf (why, len, "the local leg of device '%s' is being restored already", device);
    return -1;
  }
  /* The leg again (repaired, or replaced at the same path). */
  if (l->is_blk)
    flags |= O_EXCL;
  fd = l->cfg->direct_io ? open (l->cfg->path, flags | O_DIRECT) : -1;
  if (fd == -1)
    fd = open (l->cfg->path, flags);
  if (fd == -1 || fstat (fd, &st) == -1) {
    snprintf (why, len, "cannot open the local leg %s: %s", l->cfg->path, strerror (errno));
    if (fd >= 0)
      close (fd);
    return -1;
  }
  if (S_ISBLK (st.st_mode) ? ioctl (fd, BLKGETSIZE64, &size) == -1 : (size = (uint64_t) st.st_size, false))
    size = 0;
  if (size < d->size) {
    snprintf (why, len, "the local leg %s is smaller (%" PRIu64 " bytes) than the device (%"
              PRIu64 " bytes)", l->cfg->path, size, d->size);
    close (fd);
    return -1;
  }
  l->reopen_fd = fd;
  __atomic_fetch_or (&r->sites[0].restore_req, 1u << d->index, __ATOMIC_ACQ_REL);
  rep_info ("device '%s': restore of the local leg %s from site %u requested", device,
            l->cfg->path, site);
  return 0;
}


/* ---- planned switchover ---------------------------------------------------
 * replctl switchover: writes refused (EROFS, client.c) for the whole group,
 * every site drained (applied and recorded up to the last seq, a consistent
 * prefix in log mode), then every leg labelled handed over at that seq
 * (local legs first: a failure never leaves a remote claiming a handover
 * the primary's own legs do not).  Any failure before the labels undoes
 * the read-only state; a failed label write leaves the instance read-only
 * (HO_FAILED: the command may be run again). */

#define SWITCHOVER_POLL_US 50000

/* Why site s can never be drained as it is (NULL: it may get there). */
static const char *
site_cannot_drain (struct replicator *r, struct site *s, char *buf, size_t len)
{
  enum site_state st = site_state (s);
  size_t i;

  if (!s->running)
    return "its worker is not running";
  if (s->id == 0) {
    for (i = 0; i < r->ndevs; i++) {
      struct vdev *d = &r->devs[i];
      if (__atomic_load_n (&d->local_out, __ATOMIC_ACQUIRE) || d->local->state == LEG_FAILED) {
        snprintf (buf, len, "the local leg %s of device '%s' is out of service (replctl restore "
                  "first)", d->local->cfg->path, d->name);
        return buf;
      }
    }
    return NULL;
  }
  if (site_paused (s))
    return "it is paused (replctl resume it first)";
  if (site_state_is_dirty_log (st))
    return "it is in dirty-log mode: it lacks writes the log no longer holds (let its resync "
      "finish first)";
  if (site_state_is_disconnected (st))
    return "it is disconnected";
  return NULL;
}

/* Whether site s holds every entry <= seq durably as a consistent prefix
 * (why not in buf). */
static bool
site_drained (struct replicator *r, struct site *s, uint64_t seq, char *buf, size_t len)
{
  enum site_state st = site_state (s);
  uint64_t applied = replog_applied (r->rl, s->id);
  uint8_t f = replog_site_flags (r->rl, s->id);

  if (site_state_is_resync (st) || (f & RL_SITE_RESYNC))
    snprintf (buf, len, "it is resyncing (%" PRIu64 " regions left)", site_dirty_regions (s));
  else if (site_in_doubt (s) || (f & RL_SITE_IN_DOUBT))
    snprintf (buf, len, "it has writes in doubt (copied again once its connection is back)");
  else if (s->id && st != SITE_LOG)
    snprintf (buf, len, "it is catching up after a disconnection (applied seq %" PRIu64 " of %"
              PRIu64 ")", applied, seq);
  else if (applied < seq)
    snprintf (buf, len, "it has applied and recorded seq %" PRIu64 " of %" PRIu64, applied, seq);
  else
    return true;
  return false;
}

/* Before anything changes: the log, every site and every leg's label. */
static int
switchover_precheck (struct replicator *r, char *why, size_t len)
{
  struct replog_stats st;
  const char *no;
  char b[300];
  size_t i, j;

  replog_get_stats (r->rl, &st);
  if (st.failed) {
    snprintf (why, len, "the log failed (a sync or header write failed): restart the instance");
    return -1;
  }
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && (no = site_cannot_drain (r, &r->sites[i], b, sizeof b))) {
      snprintf (why, len, "site %zu cannot be drained: %s", i, no);
      return -1;
    }
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->lb.where == LABEL_NONE) {
        snprintf (why, len, "device '%s': the leg at site %u has no label (label = \"none\"): a "
                  "switchover hands the role over through the legs' labels", r->devs[i].name, l->site);
        return -1;
      }
      if (__atomic_load_n (&l->lb.refused, __ATOMIC_ACQUIRE)) {
        snprintf (why, len, "device '%s': the leg at site %u is refused (its label is not ours)",
                  r->devs[i].name, l->site);
        return -1;
      }
    }
  return 0;
}

/* Wait until every site holds seq (0), or one cannot, or timeout_s passed
 * (-1, why names the site). */
static int
switchover_drain (struct replicator *r, uint64_t seq, unsigned timeout_s, char *why, size_t len)
{
  uint64_t deadline = mono_ns () + (uint64_t) timeout_s * 1000000000u;
  char b[300];

  for (;;) {
    struct replog_stats st;
    const char *no;
    bool all = true;
    unsigned i;

    replog_get_stats (r->rl, &st);
    if (st.failed) {
      snprintf (why, len, "the log failed while draining");
      return -1;
    }
    for (i = 0; i < CFG_MAX_SITES && all; i++) {
      struct site *s = &r->sites[i];
      if (!s->cfg)
        continue;
      if ((no = site_cannot_drain (r, s, b, sizeof b))) {
        snprintf (why, len, "site %u cannot be drained: %s", i, no);
        return -1;
      }
      if (site_drained (r, s, seq, b, sizeof b))
        continue;
      all = false;
      if (mono_ns () >= deadline) {
        snprintf (why, len, "site %u was not drained within %u s: %s", i, timeout_s, b);
        return -1;
      }
      worker_poke (s);
    }
    if (all)
      return 0;
    usleep (SWITCHOVER_POLL_US);
  }
}

/* Every leg labelled handed over at seq: site 0 first, then the remotes.
 * 0, or -1 with the leg that failed in why. */
static int
switchover_labels (struct replicator *r, struct switchover_result *res, char *why, size_t len)
{
  const uint32_t flags = LBL_CONSISTENT | LBL_CLEAN | LBL_HANDOVER;
  const struct rl_desc *last = r->handover.seq ? replog_desc (r->rl, r->handover.seq) : NULL;
  uint64_t cons_ns = last && last->seq == r->handover.seq ? last->time_ns : 0;
  int pass;
  size_t i, j;

  for (pass = 0; pass < 2; pass++)
    for (i = 0; i < r->ndevs; i++)
      for (j = 0; j < r->devs[i].nlegs; j++) {
        struct leg *l = &r->devs[i].legs[j];
        if ((l->site == 0) != (pass == 0))
          continue;
        if (leglabel_write (l, flags, r->handover.seq, cons_ns) == -1) {
          snprintf (why, len, "device '%s': the label of the leg at site %u (%s) could not be "
                    "written: %s", r->devs[i].name, l->site, l->remote ? l->link.shown :
                    l->cfg->path, l->lb.detail);
          return -1;
        }
        res->sites[l->site].legs++;
      }
  return 0;
}

/* Back to what it was before the command (writes accepted again unless a
 * failed label write left the instance read-only). */
static void
switchover_undo (struct replicator *r, enum handover_state was, const char *why)
{
  __atomic_store_n (&r->handover.state, was, __ATOMIC_RELEASE);
  rep_warn ("switchover abandoned: %s; %s", why, was == HO_NONE ?
            "writes are accepted again, no label was written" : "the instance stays read-only");
}

int
replicator_switchover (struct replicator *r, unsigned timeout_s, struct switchover_result *res,
                       char *why, size_t len)
{
  enum handover_state was = __atomic_load_n (&r->handover.state, __ATOMIC_ACQUIRE);
  uint64_t seq;
  size_t i;

  memset (res, 0, sizeof *res);
  if (was == HO_DONE) {
    snprintf (why, len, "this instance handed its role over already, at seq %" PRIu64 ": stop "
              "it once the new primary runs", r->handover.seq);
    return -1;
  }
  if (was == HO_DRAINING || was == HO_LABELLING) {
    snprintf (why, len, "a switchover is under way");
    return -1;
  }
  if (switchover_precheck (r, why, len) == -1)
    return -1;
  __atomic_store_n (&r->handover.state, HO_DRAINING, __ATOMIC_RELEASE);
  for (i = 0; i < r->ndevs; i++) {
    /* A writer that saw no switchover has logged its entries once it lets go. */
    pthread_rwlock_wrlock (&r->devs[i].rmw_lock);
    pthread_rwlock_unlock (&r->devs[i].rmw_lock);
  }
  if (replog_barrier (r->rl, 0, &seq) == -1 || replog_wait_durable (r->rl, seq) == -1) {
    snprintf (why, len, "the log could not be made durable: %s", strerror (errno));
    switchover_undo (r, was, why);
    return -1;
  }
  rep_info ("switchover: writes refused (EROFS) from now on; draining every site up to seq %"
            PRIu64 " (at most %u s)", seq, timeout_s);
  if (switchover_drain (r, seq, timeout_s, why, len) == -1) {
    switchover_undo (r, was, why);
    return -1;
  }
  r->handover.seq = seq;
  r->handover.time_ns = wall_ns ();
  __atomic_store_n (&r->handover.state, HO_LABELLING, __ATOMIC_RELEASE);
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg) {
      res->sites[i].configured = true;
      res->sites[i].applied = replog_applied (r->rl, (unsigned) i);
    }
  res->seq = seq;
  if (switchover_labels (r, res, why, len) == -1) {
    __atomic_store_n (&r->handover.state, HO_FAILED, __ATOMIC_RELEASE);
    rep_error ("switchover FAILED at seq %" PRIu64 ": %s; the instance stays read-only: repair "
               "the leg and run 'replctl switchover' again, or restart this instance with "
               "takeover=yes to stay the primary", seq, why);
    return -1;
  }
  __atomic_store_n (&r->handover.state, HO_DONE, __ATOMIC_RELEASE);
  rep_event (EV_SWITCHOVER, -1, NULL, "switchover: every site holds every write up to seq %"
             PRIu64 " and every leg is labelled handed over; this instance is read-only now "
             "(writes fail with EROFS)", seq);
  return 0;
}
