/* admin.c: the administrator's commands (layer 5; replctl through the
 * control socket): resync, pause and resume, policy, restore of a local
 * leg.
 *
 * Owns: checking a request and handing it to the site's worker (request
 * fields of struct site, then worker_poke); nothing here changes a site's
 * state itself, except the operator's pause flag (site_set_paused).
 * Calls down only: the view (device lookup), the site state machine, the
 * workers (worker_poke), the configuration's parsers.
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
#include "replicator.h"
#include "report.h"

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

