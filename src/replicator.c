/* replicator.c: instance lifecycle, legs, and the client I/O path.
 *
 * The client path: a write is split into entries of at most max_request
 * bytes, each reserved in the log, written into it, indexed in the
 * device's overlay and committed; then it is acknowledged (async site 0)
 * or waits for the local leg (sync site 0).  A flush or FUA write appends
 * an epoch barrier and waits until the log is durable up to it.  A read
 * copies what the overlay has (entries not yet on the local leg) and reads
 * the rest from the local leg.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#include <json-c/json.h>

#include "io.h"
#include "link.h"
#include "event.h"
#include "pftrace.h"
#include "dirtylog.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define MAX_REQUEST_CAP   (32u << 20)   /* we never advertise more */

const char *
leg_state_name (enum leg_state s)
{
  switch (s) {
  case LEG_REPLICATING: return "replicating";
  case LEG_BEHIND: return "behind";
  case LEG_DISCONNECTED: return "disconnected";
  case LEG_DIRTY: return "dirty";
  case LEG_RESYNCING: return "resyncing";
  case LEG_FAILED: return "failed";
  }
  return "?";
}

/* ---- legs --------------------------------------------------------------- */

static uint32_t
dio_alignment (int fd, bool is_blk)
{
  int lbs = 0;

  if (is_blk && ioctl (fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
    return (uint32_t) lbs;
#ifdef STATX_DIOALIGN
  {
    struct statx stx;
    if (statx (fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
      return stx.stx_dio_offset_align > 512 ? stx.stx_dio_offset_align : 512;
  }
#endif
  return 512;
}

static int
leg_open_local (struct leg *l, const char *path)
{
  struct stat st;
  int flags = O_RDWR | O_CLOEXEC;
  const char *what = l->site == 0 ? "local leg" : "leg";

  if (stat (path, &st) == -1) {
    rep_error ("device '%s': %s %s: %m", l->dev->name, what, path);
    return -1;
  }
  l->is_blk = S_ISBLK (st.st_mode);
  if (!l->is_blk && !S_ISREG (st.st_mode)) {
    rep_error ("device '%s': %s %s is neither a file nor a block device", l->dev->name, what, path);
    return -1;
  }
  if (l->is_blk)
    flags |= O_EXCL;
  l->fd = l->cfg->direct_io ? open (path, flags | O_DIRECT) : -1;
  l->direct = l->fd >= 0;
  if (!l->cfg->direct_io)
    l->fd = open (path, flags);                 /* page cache for reads and writes */
  else if (l->fd == -1 && errno == EINVAL) {    /* tmpfs and friends */
    l->fd = open (path, flags);
    if (l->fd >= 0)
      rep_warn ("device '%s': %s %s does not support O_DIRECT; using the page cache",
                l->dev->name, what, path);
  }
  if (l->fd == -1) {
    if (errno == EBUSY)
      rep_error ("device '%s': %s %s is in use (opened exclusively elsewhere)", l->dev->name, what, path);
    else
      rep_error ("device '%s': %s %s: %m", l->dev->name, what, path);
    return -1;
  }
  if (!l->is_blk && flock (l->fd, LOCK_EX | LOCK_NB) == -1) {
    rep_error ("device '%s': %s %s is locked by another instance (if one was just "
               "stopped or killed, it may still be finishing its writes: retry in a moment)",
               l->dev->name, what, path);
    return -1;
  }
  if (l->is_blk) {
    if (ioctl (l->fd, BLKGETSIZE64, &l->size) == -1) {
      rep_error ("device '%s': %s %s: BLKGETSIZE64: %m", l->dev->name, what, path);
      return -1;
    }
  }
  else
    l->size = (uint64_t) st.st_size;
  /* A block device's logical block size counts with or without O_DIRECT:
   * the device advertises it (safety rule 11). */
  l->lbs = l->direct || l->is_blk ? dio_alignment (l->fd, l->is_blk) : 512;
  l->zero_range_ok = l->punch_ok = true;
  return 0;
}

/* ---- construction -------------------------------------------------------------- */

static void
vdev_destroy (struct vdev *d)
{
  size_t i;
  for (i = 0; i < d->nlegs && d->legs; i++) {
    if (d->legs[i].fd >= 0)
      close (d->legs[i].fd);
    if (d->legs[i].reopen_fd >= 0)
      close (d->legs[i].reopen_fd);
    rreader_destroy (&d->legs[i].reader);
    rlink_destroy (&d->legs[i].link);
    dlog_close (d->legs[i].dlog);
    bitmap_free (d->legs[i].dirty);
    bitmap_free (d->legs[i].doubt);
  }
  free (d->legs);
  overlay_free (d->ov);
  pthread_mutex_destroy (&d->ov_lock);
  pthread_rwlock_destroy (&d->rmw_lock);
}

void
replicator_free (struct replicator *r)
{
  size_t i;
  if (!r)
    return;
  metrics_http_stop ();                  /* bound at the start, maybe never served */
  replog_close (r->rl);
  for (i = 0; i < r->ndevs; i++)
    vdev_destroy (&r->devs[i]);
  free (r->devs);
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg) {
      pthread_mutex_destroy (&r->sites[i].lock);
      pthread_cond_destroy (&r->sites[i].cv);
    }
  cfg_free (r->cfg);
  free (r);
}

static uint32_t
pow2_floor (uint64_t v)
{
  uint32_t p = 1;
  while ((uint64_t) p * 2 <= v && p < (1u << 31))
    p *= 2;
  return p;
}

/* Devices whose local leg was out of service at the last stop: it still
 * is (restore brings it back), and reads go through a remote site that is
 * a consistent prefix, the most up to date. */
static void
local_out_init (struct replicator *r)
{
  size_t i, j;

  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    unsigned best = 0;
    uint64_t best_applied = 0;
    if (!(replog_dev_flags (r->rl, d->index) & RL_DEV_LOCAL_OUT))
      continue;
    d->local_out = true;
    d->local->state = LEG_FAILED;
    d->local->stale = true;
    for (j = 0; j < d->nlegs; j++) {
      unsigned id = d->legs[j].site;
      uint64_t a;
      if (id == 0 || r->sites[id].dirty || replog_site_mode (r->rl, id) != RL_MODE_LOG ||
          replog_site_flags (r->rl, id))
        continue;
      a = replog_applied (r->rl, id);
      if (!best || a > best_applied) {
        best = id;
        best_applied = a;
      }
    }
    d->serving = best;
    if (best) {
      r->sites[best].serving_devs |= 1u << d->index;
      rep_warn ("device '%s': the local leg %s was out of service at the last stop; reads "
                "and writes go through site %u until 'replctl restore %s --from %u'", d->name,
                d->local->cfg->path, best, d->name, best);
    }
    else
      rep_error ("device '%s': the local leg %s was out of service at the last stop and no "
                 "remote site is a consistent copy: reads fail", d->name, d->local->cfg->path);
  }
}

/* Rebuild the overlay from the recovered entries the leg serving each
 * device's reads (the local leg, or a remote one) has not applied. */
static int
rebuild_overlay (struct replicator *r)
{
  uint64_t seq, from = replog_applied (r->rl, 0) + 1, n = 0;
  uint64_t after[RL_MAX_DEVICES];
  size_t i;

  for (i = 0; i < r->ndevs; i++) {
    after[i] = replog_applied (r->rl, r->devs[i].serving);
    if (after[i] + 1 < from)
      from = after[i] + 1;
  }
  if (r->rec.entries == 0)
    return 0;
  if (from < r->rec.first_seq)
    from = r->rec.first_seq;
  for (seq = from; seq <= r->rec.last_seq; seq++) {
    const struct rl_desc *d = replog_desc (r->rl, seq);
    struct vdev *v;
    if (d->op == RL_OP_BARRIER || seq <= after[d->device])
      continue;
    v = &r->devs[d->device];
    if (overlay_insert (v->ov, d->offset, d->offset + d->length, seq,
                        d->op == RL_OP_WRITE ? OV_DATA : OV_ZERO,
                        d->op == RL_OP_WRITE ? replog_payload (r->rl, d) : NULL) == -1) {
      rep_error ("rebuilding the read index: %m");
      return -1;
    }
    n++;
  }
  rep_debugc (REP_DBG_LOG, "read index rebuilt from %" PRIu64 " entries", n);
  return 0;
}

/* ---- remote legs and site modes ------------------------------------------ */

/* A stable 32-bit id per leg (device name, site): the iSCSI ISID, so a
 * reconnect or a restart reinstates the same session. */
static uint32_t
leg_session_id (const struct leg *l)
{
  uint32_t h = 2166136261u;
  const char *p;
  for (p = l->dev->name; *p; p++)
    h = (h ^ (uint8_t) *p) * 16777619u;
  return (h ^ l->site) * 16777619u;
}

/* Set up the remote legs of d (after its size and block size are known):
 * dirty logs, and one connection attempt each.  Unreachable: start with
 * the site disconnected.  Reachable but unsuitable (smaller than the
 * device, larger blocks): refused. */
static int dirtylog_open (struct vdev *d, struct leg *l);

static int
remote_legs_init (struct vdev *d)
{
  size_t j;

  for (j = 0; j < d->nlegs; j++) {
    struct leg *l = &d->legs[j];
    const struct cfg_site *cs = d->r->sites[l->site].cfg;
    char what[128], err[256];
    const char *why = NULL;
    const struct link_ops *ops;
    bool unsuitable;

    if (l->site == 0)
      continue;
    if (!(l->dirty = bitmap_new (d->size, l->cfg->dirty_log.region_size))) {
      rep_error ("device '%s': dirty log of site %u: out of memory", d->name, l->site);
      return -1;
    }
    if (l->cfg->dirty_log.type == DIRTYLOG_DISK && dirtylog_open (d, l) == -1)
      return -1;
    if (l->cfg->transport == TRANSPORT_PATH)
      continue;
    if (!(ops = link_ops_for (l->cfg->transport, &why))) {
      rep_error ("device '%s': leg %s: %s", d->name, l->cfg->path, why);
      return -1;
    }
    l->remote = true;
    l->lbs = 512;
    snprintf (what, sizeof what, "device '%s' site %u", d->name, l->site);
    rlink_init (&l->link, ops, l->cfg->path, what);
    rreader_init (&l->reader, &l->link);
    {
      char pf[512];
      if (link_secret_file (l->cfg->path, pf, sizeof pf) && access (pf, R_OK) == -1) {
        rep_error ("device '%s': leg at site %u: CHAP password file %s: %m", d->name, l->site, pf);
        return -1;
      }
    }
    l->link.params.request_timeout_s = (unsigned) ((cs->request_timeout_ms + 999) / 1000);
    l->link.params.session_id = leg_session_id (l);
    l->link.connect_timeout_ms = cs->disconnect_timeout_ms < 10000 ? cs->disconnect_timeout_ms : 10000;
    if (cs->disconnect_timeout_ms / 2 < l->link.backoff_max_ms)
      l->link.backoff_max_ms = cs->disconnect_timeout_ms / 2 > 200 ? (unsigned) (cs->disconnect_timeout_ms / 2) : 200;
    l->link.min_size = d->size;
    l->link.max_block = d->block_size;
    l->link.conn = rlink_connect_once (&l->link, l->link.connect_timeout_ms < 5000 ?
                                       l->link.connect_timeout_ms : 5000,
                                       &l->link.info, err, sizeof err, &unsuitable);
    if (l->link.conn) {
      l->link.up = true;
      l->link.connects++;
      l->lbs = l->link.info.block_size;
      continue;
    }
    if (unsuitable) {
      rep_error ("device '%s': leg %s at site %u refused: %s", d->name, l->link.shown, l->site, err);
      return -1;
    }
    rep_event (EV_LINK_DOWN, (int) l->site, d->name, "leg %s is unreachable at start (%s); starting "
               "with the site disconnected, its entries stay in the log and it reconnects in the "
               "background", l->link.shown, err);
    rlink_set_error (&l->link, "%s", err);
    l->link.down_since_ns = link_mono_ns ();
  }
  return 0;
}

/* Sites whose legs are all trusted (dirty_log sync = false): a new such
 * site starts in log mode; others need an initial sync first. */
static uint32_t
trusted_sites (struct replicator *r)
{
  uint32_t m = 1u;
  size_t i, j;

  for (i = 1; i < CFG_MAX_SITES; i++) {
    bool all = r->sites[i].cfg != NULL;
    for (j = 0; j < r->ndevs && all; j++) {
      const struct cfg_leg *cl = cfg_leg (r->devs[j].cfg, (unsigned) i);
      if (cl && cl->dirty_log.sync)
        all = false;
    }
    if (all)
      m |= 1u << i;
  }
  return m;
}

/* A persistent dirty log (type disk): open or create its file. */
static int
dirtylog_open (struct vdev *d, struct leg *l)
{
  struct dlog_id id = { .device = d->name, .size = d->size,
                        .region_size = l->cfg->dirty_log.region_size, .site = l->site };
  struct dlog_open_info info;
  char err[512];

  if (dlog_open (l->cfg->dirty_log.path, &id, l->dirty, &l->dlog, &info, err, sizeof err) == -1) {
    rep_error ("device '%s': dirty log of the leg at site %u: %s", d->name, l->site, err);
    return -1;
  }
  l->dlog_created = info.created;
  if (info.header_bad)
    rep_warn ("device '%s': dirty log %s of the leg at site %u has an unreadable header: "
              "recreated with every region marked (a full resync if the site needs one)",
              d->name, l->cfg->dirty_log.path, l->site);
  else if (info.bad_pages)
    rep_warn ("device '%s': dirty log %s of the leg at site %u: %" PRIu64 " pages failed "
              "their checks (torn or corrupt): their regions are marked dirty", d->name,
              l->cfg->dirty_log.path, l->site, info.bad_pages);
  return 0;
}

int
leg_dlog_flush (struct leg *l)
{
  int rc = dlog_flush (l->dlog);

  if (rc == 1)
    rep_warn ("device '%s': writing dirty log %s of the leg at site %u failed (%m); every "
              "page written since its last good sync was written again after reopening "
              "it, and synced", l->dev->name, dlog_path (l->dlog), l->site);
  return rc == -1 ? -1 : 0;
}

/* The log's syncer, before a header write: the dirty logs' set bits to
 * disk.  A failed write or sync is retried at once (dlog_flush rewrites
 * every page written since the file's last good sync, through a new
 * descriptor: safety rule 13).  A dirty log that still cannot be written
 * is not trusted again: every region of its leg is marked (in memory,
 * status shows it), the file is invalidated as far as it can be, and its
 * site is returned so that the header says the site's bitmaps are
 * incomplete before any entry leaves the log on their account. */
static uint32_t
dirtylogs_sync (void *opaque)
{
  struct replicator *r = opaque;
  uint32_t lost = 0;
  size_t i, j;

  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (!l->dlog)
        continue;
      if (__atomic_load_n (&l->dlog_failed, __ATOMIC_ACQUIRE)) {
        lost |= 1u << l->site;
        continue;
      }
      if (leg_dlog_flush (l) == 0)
        continue;
      rep_error ("device '%s': dirty log %s of the leg at site %u cannot be written (%m, also "
                 "after reopening it): every region of that leg is marked dirty and the log "
                 "header says so; it is resynchronised in full", r->devs[i].name,
                 dlog_path (l->dlog), l->site);
      bitmap_set_all (l->dirty);
      __atomic_store_n (&l->dlog_failed, true, __ATOMIC_RELEASE);
      dlog_invalidate (l->dlog);
      lost |= 1u << l->site;
    }
  return lost;
}

/* The log header says whether a remote site is fed from the log. */
static void
site_set_all_dirty (struct replicator *r, struct site *s)
{
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++)
      if (r->devs[i].legs[j].site == s->id)
        bitmap_set_all (r->devs[i].legs[j].dirty);
}

/* A site that is not a consistent prefix after a restart: legs with a
 * usable persistent dirty log keep what it says; the others (core, nolog,
 * a dirty log created just now, and every leg of a site whose dirty logs
 * could not be written before: RL_SITE_DLOG_LOST) get every region
 * marked.  Returns how many legs had to be marked in full. */
static unsigned
site_keep_dirty_logs (struct replicator *r, struct site *s)
{
  bool lost = replog_site_flags (r->rl, s->id) & RL_SITE_DLOG_LOST;
  unsigned n = 0;
  size_t i, j;
  if (lost)
    rep_warn ("site %u: a dirty log of the site could not be written before the restart; "
              "every region of its legs is marked", s->id);
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->site != s->id || (l->dlog && !l->dlog_created && !lost))
        continue;
      bitmap_set_all (l->dirty);
      n++;
    }
  return n;
}

/* A consistent site: stale bits of a persistent dirty log are dropped. */
static void
site_clear_dirty_logs (struct replicator *r, struct site *s)
{
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->site == s->id && l->dlog)
        bitmap_clear_bits (l->dirty, 0, l->dirty->nbits);
    }
}

static int
sites_mode_init (struct replicator *r, struct site *s)
{
  bool is_new = r->rec.new_sites & (1u << s->id);
  unsigned kept;
  size_t i, j;

  if (replog_site_flags (r->rl, s->id) & RL_SITE_DLOG_LOST)
    /* Dropped by the first header write, after the dirty logs were
     * synced with what this start marks (all, or nothing for a site that
     * is a consistent prefix); set again there if they still fail. */
    (void) replog_change_site_flags (r->rl, s->id, 0, RL_SITE_DLOG_LOST);

  if (replog_site_mode (r->rl, s->id) == RL_MODE_LOG) {
    uint8_t f = replog_site_flags (r->rl, s->id);
    if ((f & RL_SITE_RESYNC) && !(f & RL_SITE_IN_DOUBT)) {
      /* Back in log mode, copying its dirty regions, when it stopped. */
      unsigned lost = site_keep_dirty_logs (r, s);
      if (lost)
        rep_warn ("site %u: a resync was under way at the last stop; %u of its legs have no "
                  "persistent dirty log, so every region of those is copied again", s->id, lost);
      else
        rep_info ("site %u: a resync was under way at the last stop; it carries on from its "
                  "persistent dirty logs", s->id);
      return 0;
    }
    if (!(f & RL_SITE_IN_DOUBT)) {
      site_clear_dirty_logs (r, s);    /* a consistent prefix: nothing is missing */
      return 0;
    }
    /* Which regions were in doubt was known only in memory. */
    rep_warn ("site %u: writes were in doubt there before the restart (a connection was "
              "aborted with writes in flight); moving it to dirty-log mode", s->id);
    replog_set_site_dirty (r->rl, s->id);
    s->in_doubt = true;
  }
  else if (replog_site_flags (r->rl, s->id) & RL_SITE_IN_DOUBT) {
    rep_warn ("site %u: in dirty-log mode with writes in doubt before the restart (a connection "
              "was aborted with writes in flight): every region is marked", s->id);
    s->in_doubt = true;
  }
  s->dirty = true;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->site != s->id)
        continue;
      l->state = LEG_DIRTY;
      l->initial_sync = is_new;
    }
  kept = 0;
  if (is_new || s->in_doubt)
    site_set_all_dirty (r, s);         /* initial sync; in-doubt regions are not on disk */
  else
    kept = site_keep_dirty_logs (r, s);
  if (s->in_doubt)
    ;                            /* said above */
  else if (is_new)
    rep_warn ("site %u: new legs need an initial sync before they are replicated from the log "
              "(set dirty_log sync = false, or initial-sync=false, for legs known to equal "
              "the device); it is copied online once its remotes are reachable", s->id);
  else if (kept)
    rep_warn ("site %u: in dirty-log mode (it fell behind or was away while the log needed "
              "the space); %u of its legs have no persistent dirty log, so every region of "
              "those is marked for resync", s->id, kept);
  else
    rep_info ("site %u: in dirty-log mode; its persistent dirty logs say what to copy", s->id);
  return 0;
}

/* Entries leave the log that dirty-mode sites lack: record their regions. */
static void
on_release (void *opaque, uint32_t sites, const struct rl_desc *d)
{
  struct replicator *r = opaque;
  struct vdev *v;
  size_t j;

  if (d->device >= r->ndevs)
    return;
  v = &r->devs[d->device];
  for (j = 0; j < v->nlegs; j++) {
    struct leg *l = &v->legs[j];
    if ((sites & (1u << l->site)) && l->dirty)
      bitmap_set_range (l->dirty, d->offset, d->length);
  }
}

struct replicator *
replicator_new (struct cfg *cfg)
{
  struct replicator *r = calloc (1, sizeof *r);
  struct replog_dev_id ids[RL_MAX_DEVICES];
  struct replog_open_args oa;
  size_t i, j;

  pft_init ();                          /* before any file is written */
  event_configure (cfg->on_event, cfg->control.socket);   /* events of the start are queued */
  if (!r) {
    rep_error ("calloc: %m");
    cfg_free (cfg);
    return NULL;
  }
  r->cfg = cfg;
  r->drain_ms = 10000;
  r->started = (uint64_t) time (NULL);
  r->force_sync_engine = getenv ("NBD_REPLICATOR_NO_URING") != NULL;
  /* The metrics port first: a port in use must not leave a new log behind. */
  if (cfg->metrics.listen && metrics_http_open (r, cfg->metrics.listen) == -1)
    goto err;
  if (cfg->ndevices > RL_MAX_DEVICES) {
    rep_error ("%s: at most %d devices share one log", cfg->source, RL_MAX_DEVICES);
    goto err;
  }
  for (i = 0; i < cfg->nsites; i++) {
    struct site *s = &r->sites[cfg->sites[i].id];
    s->r = r;
    s->id = cfg->sites[i].id;
    s->cfg = &cfg->sites[i];
    s->policy = s->cfg->policy;
    s->fall_behind = s->cfg->fall_behind;
    s->fall_behind_value = s->cfg->fall_behind_value;
    s->served = true;
    pthread_mutex_init (&s->lock, NULL);
    {
      pthread_condattr_t ca;
      pthread_condattr_init (&ca);
      pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
      pthread_cond_init (&s->cv, &ca);
      pthread_condattr_destroy (&ca);
    }
    r->site_mask |= 1u << s->id;
  }

  if (!(r->devs = calloc (cfg->ndevices, sizeof *r->devs))) {
    rep_error ("calloc: %m");
    goto err;
  }
  for (i = 0; i < cfg->ndevices; i++) {
    struct vdev *d = &r->devs[i];
    const struct cfg_device *cd = &cfg->devices[i];
    uint32_t bs = 512;

    d->r = r;
    d->index = (unsigned) i;
    d->cfg = cd;
    d->name = cd->name;
    pthread_mutex_init (&d->ov_lock, NULL);
    {
      /* Writers first: a stream of aligned writes must not starve an RMW. */
      pthread_rwlockattr_t ra;
      pthread_rwlockattr_init (&ra);
      pthread_rwlockattr_setkind_np (&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
      pthread_rwlock_init (&d->rmw_lock, &ra);
      pthread_rwlockattr_destroy (&ra);
    }
    r->ndevs++;
    if (!(d->ov = overlay_new ()) || !(d->legs = calloc (cd->nlegs, sizeof *d->legs))) {
      rep_error ("calloc: %m");
      goto err;
    }
    for (j = 0; j < cd->nlegs; j++) {
      d->legs[j].fd = -1;
      d->legs[j].dev = d;
      d->legs[j].site = cd->legs[j].site;
      d->legs[j].cfg = &cd->legs[j];
      d->legs[j].served = true;
      d->legs[j].state = LEG_REPLICATING;
      d->legs[j].reopen_fd = -1;
    }
    d->nlegs = cd->nlegs;
    /* Path legs (the local one, and files or block devices at remote
     * sites) are opened now; their block sizes make the device's. */
    for (j = 0; j < cd->nlegs; j++) {
      struct leg *l = &d->legs[j];
      if (l->cfg->transport != TRANSPORT_PATH)
        continue;
      if (l->site == 0)
        d->local = l;
      if (leg_open_local (l, cd->legs[j].path) == -1)
        goto err;
      if (l->lbs > bs)
        bs = l->lbs;
    }
    d->size = cd->size ? cd->size : d->local->size;
    if (d->size == 0) {
      rep_error ("device '%s': size is 0 (the local leg %s is empty; set size=)", d->name, d->local->cfg->path);
      goto err;
    }
    if (!(d->local->dirty = bitmap_new (d->size, d->local->cfg->dirty_log.region_size))) {
      rep_error ("device '%s': out of memory", d->name);
      goto err;
    }
    if (d->local->size < d->size) {
      rep_error ("device '%s': local leg %s is smaller (%" PRIu64 " bytes) than the device (%" PRIu64 " bytes)",
                 d->name, d->local->cfg->path, d->local->size, d->size);
      goto err;
    }
    if (d->size % bs) {
      rep_error ("device '%s': size %" PRIu64 " is not a multiple of the block size %u",
                 d->name, d->size, bs);
      goto err;
    }
    for (j = 0; j < cd->nlegs; j++) {
      struct leg *l = &d->legs[j];
      if (l->site == 0 || l->cfg->transport != TRANSPORT_PATH)
        continue;
      if (l->size < d->size) {
        rep_error ("device '%s': leg %s at site %u is smaller (%" PRIu64 " bytes) than the device "
                   "(%" PRIu64 " bytes)", d->name, l->cfg->path, l->site, l->size, d->size);
        goto err;
      }
    }
    d->block_size = bs;
    if (remote_legs_init (d) == -1)
      goto err;
    ids[i].name = d->name;
    ids[i].size = d->size;
    ids[i].block_size = bs;
  }

  memset (&oa, 0, sizeof oa);
  oa.path = cfg->replog.path;
  oa.offset = cfg->replog.offset;
  oa.size = cfg->replog.size;
  oa.mode = cfg->replog.mode;
  oa.commit_interval_ms = cfg->replog.commit_interval_ms;
  oa.ndevices = (unsigned) cfg->ndevices;
  oa.devices = ids;
  oa.sites = r->site_mask;
  oa.log_sites = trusted_sites (r);
  if (replog_open (&oa, &r->rl, &r->rec) == -1)
    goto err;
  if (r->rec.on_tmpfs)
    rep_warn ("replog %s is on tmpfs: flushes cannot be durable across a power loss", oa.path);
  if (r->rec.created)
    rep_info ("replog %s: created a new log", oa.path);
  else if (r->rec.entries == 0)
    rep_info ("replog %s: opened (header copy %c, generation %" PRIu64 "): recovered 0 entries, "
              "nothing to replay", oa.path, 'A' + r->rec.header_copy, r->rec.generation);
  else
    rep_info ("replog %s: recovered %" PRIu64 " entries (%" PRIu64 " bytes of data, seq %" PRIu64
              "..%" PRIu64 ") from header copy %c generation %" PRIu64 "; scan stopped: %s",
              oa.path, r->rec.entries, r->rec.bytes, r->rec.first_seq,
              r->rec.entries ? r->rec.last_seq : r->rec.first_seq - 1,
              'A' + r->rec.header_copy, r->rec.generation, r->rec.stop_reason);
  replog_set_release_fn (r->rl, on_release, r);
  replog_set_dirtylog_sync (r->rl, dirtylogs_sync, r);
  for (i = 1; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && sites_mode_init (r, &r->sites[i]) == -1)
      goto err;

  /* Largest request: a power of two <= 1/8 of the data ring, <= 32M. */
  {
    struct replog_stats st;
    uint64_t cap;
    replog_get_stats (r->rl, &st);
    cap = st.data_blocks * RL_BLOCK / 8;
    if (cap > MAX_REQUEST_CAP)
      cap = MAX_REQUEST_CAP;
    for (i = 0; i < r->ndevs; i++) {
      r->devs[i].max_request = pow2_floor (cap);
      if (r->devs[i].max_request < r->devs[i].block_size || r->devs[i].max_request < 65536) {
        rep_error ("replog %s: too small for device '%s' (largest request %u bytes)",
                   oa.path, r->devs[i].name, r->devs[i].max_request);
        goto err;
      }
    }
  }
  local_out_init (r);
  if (rebuild_overlay (r) == -1)
    goto err;
  r->sites[0].done_seq = replog_applied (r->rl, 0);
  return r;

 err:
  replicator_free (r);
  return NULL;
}

int
replicator_start (struct replicator *r)
{
  unsigned i;

  if (event_start () == -1 || metrics_http_start () == -1)
    return -1;
  if (replog_start (r->rl) == -1)
    return -1;
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && r->sites[i].served && worker_start (&r->sites[i]) == -1)
      return -1;
  return 0;
}

void
replicator_stop (struct replicator *r)
{
  unsigned i;
  if (!r)
    return;
  __atomic_store_n (&r->stop, true, __ATOMIC_RELEASE);
  replicator_verify_stop (r);
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].running)
      worker_stop (&r->sites[i]);
  replog_stop (r->rl);
  metrics_http_stop ();
  event_stop (2000);                     /* the hooks of the last changes, bounded */
}

struct vdev *
replicator_find (struct replicator *r, const char *name)
{
  size_t i;
  if (!name || !*name)
    return &r->devs[0];
  for (i = 0; i < r->ndevs; i++)
    if (!strcmp (r->devs[i].name, name))
      return &r->devs[i];
  return NULL;
}

/* ---- reads ------------------------------------------------------------------------- */

/* Per-thread aligned bounce buffer for O_DIRECT reads. */
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;
struct bounce {
  void *p;
  size_t len;
};

static void
bounce_free (void *v)
{
  struct bounce *b = v;
  free (b->p);
  free (b);
}

static void
bounce_init (void)
{
  pthread_key_create (&bounce_key, bounce_free);
}

static void *
bounce_get (size_t len)
{
  struct bounce *b;

  pthread_once (&bounce_once, bounce_init);
  b = pthread_getspecific (bounce_key);
  if (!b) {
    if (!(b = calloc (1, sizeof *b)))
      return NULL;
    pthread_setspecific (bounce_key, b);
  }
  if (b->len < len) {
    void *p;
    if (posix_memalign (&p, 4096, len) != 0)
      return NULL;
    free (b->p);
    b->p = p;
    b->len = len;
  }
  return b->p;
}

/* Read [off, off+len) of a leg into buf, honouring O_DIRECT alignment. */
static int
leg_read (struct leg *l, void *buf, uint32_t len, uint64_t off)
{
  uint64_t a = l->lbs, s, e;
  uint8_t *b;

  if (!l->direct ||
      ((uintptr_t) buf % 4096 == 0 && off % a == 0 && len % a == 0))
    return io_pread_full (l->fd, buf, len, off, true);
  s = off & ~(a - 1);
  e = (off + len + a - 1) & ~(a - 1);
  if (!(b = bounce_get ((size_t) (e - s))))
    return -1;
  if (io_pread_full (l->fd, b, (size_t) (e - s), s, true) == -1)
    return -1;
  memcpy (buf, b + (off - s), len);
  return 0;
}

/* The leg of d at site (0 = none). */
static struct leg *
vdev_leg_at (struct vdev *d, unsigned site)
{
  size_t j;
  for (j = 0; j < d->nlegs && site; j++)
    if (d->legs[j].site == site)
      return &d->legs[j];
  return NULL;
}

int
leg_pread_any (struct leg *l, void *buf, uint32_t len, uint64_t off, char *err, size_t errlen)
{
  err[0] = 0;
  if (l->remote)
    return rreader_pread (&l->reader, buf, len, off, err, errlen);
  if (leg_read (l, buf, len, off) == -1) {
    int e = errno;
    snprintf (err, errlen, "reading %s at %" PRIu64 ": %s", l->cfg->path, off, strerror (e));
    return -e;
  }
  return 0;
}

struct gaps {
  uint64_t start, end;          /* request range */
  uint64_t cursor;              /* covered up to here */
  uint8_t *buf;
  uint64_t (*v)[2];
  size_t n, cap;
  uint64_t inline_v[16][2];
  int err;
};

static void
add_gap (struct gaps *g, uint64_t s, uint64_t e)
{
  if (g->n == g->cap) {
    size_t cap = g->cap * 2;
    uint64_t (*v)[2] = g->v == g->inline_v ? malloc (cap * sizeof *v) : realloc (g->v, cap * sizeof *v);
    if (!v) {
      g->err = ENOMEM;
      return;
    }
    if (g->v == g->inline_v)
      memcpy (v, g->inline_v, sizeof g->inline_v);
    g->v = v;
    g->cap = cap;
  }
  g->v[g->n][0] = s;
  g->v[g->n][1] = e;
  g->n++;
}

static void
copy_piece (const struct ov_piece *p, void *opaque)
{
  struct gaps *g = opaque;
  uint64_t s = p->start > g->start ? p->start : g->start;
  uint64_t e = p->end < g->end ? p->end : g->end;

  if (s > g->cursor)
    add_gap (g, g->cursor, s);
  if (p->kind == OV_DATA)
    memcpy (g->buf + (s - g->start), p->src + (s - p->eoff), e - s);
  else
    memset (g->buf + (s - g->start), 0, e - s);
  g->cursor = e;
}

/* The first half of a read of the device view: what unapplied entries
 * hold over [offset, offset + count) goes into buf (under the overlay
 * lock, so the log bytes stay put while copied); g gets the ranges to read
 * from the leg serving the device afterwards (anything missing from the
 * overlay was applied before we looked), *out and *serving which leg that
 * is.  Free g->v if it is not g->inline_v. */
static void
view_walk (struct vdev *d, void *buf, uint32_t count, uint64_t offset, struct gaps *g,
           bool *out, unsigned *serving)
{
  *g = (struct gaps) { .start = offset, .end = offset + count, .cursor = offset, .buf = buf,
                       .cap = 16 };
  g->v = g->inline_v;
  pthread_mutex_lock (&d->ov_lock);
  overlay_foreach (d->ov, g->start, g->end, copy_piece, g);
  *out = d->local_out;
  *serving = d->serving;
  pthread_mutex_unlock (&d->ov_lock);
  if (g->cursor < g->end)
    add_gap (g, g->cursor, g->end);
}

/* The local leg of d failed a read: with a remote site up to date, site 0
 * takes the leg out of service (as after a failed write) and that site
 * serves the device.  Waits for that, at most site 0's disconnect_timeout;
 * 0 once a remote site serves the device. */
/* Wait (polls of 10 ms, at most n) until a remote site serves d's reads
 * (its local leg out of service): 0, or -1. */
static int
wait_serving (struct vdev *d, uint64_t n)
{
  uint64_t i;
  for (i = 0; i < n; i++) {
    if (__atomic_load_n (&d->local_out, __ATOMIC_ACQUIRE) &&
        __atomic_load_n (&d->serving, __ATOMIC_ACQUIRE))
      return 0;
    usleep (10000);
  }
  return -1;
}

static int
local_read_failed (struct vdev *d)
{
  struct site *s0 = &d->r->sites[0];
  uint64_t ms = s0->cfg->disconnect_timeout_ms < 5000 ? s0->cfg->disconnect_timeout_ms : 5000;
  uint64_t n = ms / 10 + 1;              /* a read waits briefly, whatever the timeout */

  __atomic_add_fetch (&d->local->errors, 1, __ATOMIC_RELAXED);
  if (!vdev_pick_server (d))
    return -1;                           /* the leg holds the only copy */
  __atomic_fetch_or (&s0->fail_req, 1u << d->index, __ATOMIC_ACQ_REL);
  worker_poke (s0);
  return wait_serving (d, n);
}

/* The device's content (leg + unapplied entries), without counting it as a
 * client read. */
int
rdev_read_view (struct vdev *d, void *buf, uint32_t count, uint64_t offset)
{
  struct gaps g;
  size_t i;
  int r = 0;
  bool out, local_failed = false;
  unsigned serving;

  if (offset > d->size || count > d->size - offset) {
    errno = EINVAL;
    rep_error ("device '%s': read beyond the end", d->name);
    return -1;
  }
  view_walk (d, buf, count, offset, &g, &out, &serving);
  if (g.err) {
    errno = g.err;
    rep_error ("device '%s': read: %m", d->name);
    r = -1;
  }
  if (r == 0 && g.n && out && !serving && vdev_pick_server (d)) {
    /* The local leg was just taken out of service and a remote site is
     * taking over (asynchronously, in its worker): wait for it rather than
     * fail the read (guarantee 4.6). */
    uint64_t ms = d->r->sites[0].cfg->disconnect_timeout_ms;
    if (wait_serving (d, (ms < 5000 ? ms : 5000) / 10 + 1) == 0) {
      if (g.v != g.inline_v)
        free (g.v);
      return rdev_read_view (d, buf, count, offset);
    }
  }
  if (r == 0 && g.n && out) {
    /* The local leg is out of service: the serving site's leg. */
    struct leg *src = vdev_leg_at (d, serving);
    char err[256];
    for (i = 0; r == 0 && i < g.n; i++) {
      int e = src ? leg_pread_any (src, (uint8_t *) buf + (g.v[i][0] - offset),
                                   (uint32_t) (g.v[i][1] - g.v[i][0]), g.v[i][0], err, sizeof err)
                  : -EIO;
      if (e) {
        errno = -e;
        if (src)
          rep_error ("device '%s': reading through site %u (the local leg is out of service): %s",
                     d->name, serving, err);
        else
          rep_error ("device '%s': read: the local leg is out of service and no remote site "
                     "is up to date to read from", d->name);
        r = -1;
      }
    }
  }
  for (i = 0; r == 0 && !out && i < g.n; i++) {
    if (leg_read (d->local, (uint8_t *) buf + (g.v[i][0] - offset),
                  (uint32_t) (g.v[i][1] - g.v[i][0]), g.v[i][0]) == -1) {
      rep_error ("device '%s': reading local leg %s: %m", d->name, d->local->cfg->path);
      r = -1;
      local_failed = true;
    }
  }
  if (g.v != g.inline_v)
    free (g.v);
  if (local_failed && local_read_failed (d) == 0)
    return rdev_read_view (d, buf, count, offset);   /* through the serving site now */
  if (local_failed)
    errno = EIO;
  return r;
}

int
rdev_view_overlay (struct vdev *d, void *buf, uint32_t count, uint64_t offset,
                   uint64_t (*gaps)[2], unsigned max, unsigned *n)
{
  struct gaps g;
  bool out;
  unsigned serving;
  size_t i;

  view_walk (d, buf, count, offset, &g, &out, &serving);
  if (out || g.err || g.n > max) {
    if (g.v != g.inline_v)
      free (g.v);
    errno = out ? ENODEV : g.err ? g.err : E2BIG;
    return -1;
  }
  for (i = 0; i < g.n; i++) {
    gaps[i][0] = g.v[i][0];
    gaps[i][1] = g.v[i][1];
  }
  *n = (unsigned) g.n;
  if (g.v != g.inline_v)
    free (g.v);
  return 0;
}

int
rdev_pread (struct vdev *d, void *buf, uint32_t count, uint64_t offset)
{
  int r = rdev_read_view (d, buf, count, offset);
  __atomic_add_fetch (&d->reads, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->bytes_read, count, __ATOMIC_RELAXED);
  return r;
}

static void
note_piece (const struct ov_piece *p, void *opaque)
{
  (void) p;
  *(bool *) opaque = true;
}

/* Where [off, off + len) of leg l stops reading as zeroes: a remote leg's
 * block status, a file's holes (SEEK_DATA); off for a block device. */
static uint64_t
leg_hole_end (struct leg *l, uint64_t off, uint64_t len)
{
  uint64_t end;
  off_t data;

  if (l->remote)
    return rreader_zero_end (&l->reader, off, (uint32_t) len, &end) == 0 ? end : off;
  if (l->is_blk)
    return off;
  data = lseek (l->fd, (off_t) off, SEEK_DATA);
  if (data == -1)
    return errno == ENXIO ? off + len : off;   /* ENXIO: no data up to EOF */
  return (uint64_t) data > off + len ? off + len : (uint64_t) data;
}

uint64_t
rdev_hole_end (struct vdev *d, uint64_t off, uint64_t len)
{
  bool any = false, out;
  unsigned serving;
  struct leg *src;

  if (off >= d->size)
    return off;
  if (len > d->size - off)
    len = d->size - off;
  /* Same order as a read: the overlay, then the leg. */
  pthread_mutex_lock (&d->ov_lock);
  overlay_foreach (d->ov, off, off + len, note_piece, &any);
  out = d->local_out;
  serving = d->serving;
  pthread_mutex_unlock (&d->ov_lock);
  if (any)
    return off;
  src = out ? vdev_leg_at (d, serving) : d->local;
  return src ? leg_hole_end (src, off, len) : off;
}

/* ---- writes ------------------------------------------------------------------------- */

static int
check_range (struct vdev *d, uint64_t count, uint64_t offset, const char *what)
{
  if (offset > d->size || count > d->size - offset) {
    errno = ENOSPC;
    rep_error ("device '%s': %s beyond the end (offset %" PRIu64 ", %" PRIu64 " bytes, size %" PRIu64 ")",
               d->name, what, offset, count, d->size);
    return -1;
  }
  return 0;
}

/* The policies (DESIGN 3.3), after the entries up to seq are logged:
 * a sync site, or an async one over its fall_behind threshold, holds the
 * client until it has seq (bounded by its disconnect_timeout). */
static int
apply_policies (struct replicator *r, uint64_t seq, const char *what)
{
  bool durable = false;
  unsigned i;

  if (!seq)
    return 0;
  for (i = 0; i < CFG_MAX_SITES; i++) {
    struct site *s = &r->sites[i];
    bool fb;
    if (!s->cfg || !s->served || !s->running)
      continue;
    fb = __atomic_load_n (&s->policy, __ATOMIC_RELAXED) != POLICY_SYNC;
    if (fb && (__atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) == FB_NONE || !site_over_threshold (s, seq)))
      continue;
    if (i && (__atomic_load_n (&s->disconnected, __ATOMIC_RELAXED) ||
              __atomic_load_n (&s->dirty, __ATOMIC_RELAXED)))
      continue;
    if (!durable) {
      /* Entries ship only once durable: make it durable now (group
       * commit) rather than after the background interval. */
      if (replog_wait_durable (r->rl, seq) == -1) {
        rep_error ("%s: the log could not be made durable: %m", what);
        errno = EIO;
        return -1;
      }
      durable = true;
    }
    site_wait_done (s, seq, fb);
  }
  return 0;
}

/* After the entries are logged: FUA makes them durable, then the policies. */
static int
finish_write (struct vdev *d, uint64_t last_seq, bool fua)
{
  struct replicator *r = d->r;

  if (fua) {
    uint64_t s;
    if (replog_barrier (r->rl, RL_FLAG_FUA, &s) == -1 || replog_wait_durable (r->rl, s) == -1) {
      rep_error ("device '%s': FUA: the log could not be made durable: %m", d->name);
      errno = EIO;
      return -1;
    }
    if (s > last_seq)
      last_seq = s;              /* a sync site must have flushed it too */
  }
  return apply_policies (r, last_seq, d->name);
}

/* ---- policies ---------------------------------------------------------------- */

uint64_t
site_backlog_entries (struct site *s, uint64_t last)
{
  uint64_t done = __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED);
  return last > done ? last - done : 0;
}

uint64_t
site_backlog_bytes (struct site *s)
{
  int64_t b = s->bytes_base + (int64_t) __atomic_load_n (&s->r->bytes_logged, __ATOMIC_RELAXED)
    - (int64_t) __atomic_load_n (&s->bytes_done, __ATOMIC_RELAXED);
  return b > 0 ? (uint64_t) b : 0;
}

uint64_t
site_oldest_age_ms (struct site *s, uint64_t last)
{
  uint64_t done = __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED);
  const struct rl_desc *d;
  struct timespec ts;
  uint64_t now, t;

  if (last <= done || !s->r->rl)
    return 0;
  d = replog_desc (s->r->rl, done + 1);
  t = __atomic_load_n (&d->time_ns, __ATOMIC_RELAXED);
  if (t == 0)
    return 0;                    /* being reserved right now: it is new */
  clock_gettime (CLOCK_REALTIME, &ts);
  now = (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
  return now > t ? (now - t) / 1000000u : 0;
}

bool
site_over_threshold (struct site *s, uint64_t last)
{
  switch (__atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED)) {
  case FB_IOS: return site_backlog_entries (s, last) > __atomic_load_n (&s->fall_behind_value, __ATOMIC_RELAXED);
  case FB_SIZE: return site_backlog_bytes (s) > __atomic_load_n (&s->fall_behind_value, __ATOMIC_RELAXED);
  case FB_TIMEOUT: return site_oldest_age_ms (s, last) > __atomic_load_n (&s->fall_behind_value, __ATOMIC_RELAXED);
  case FB_NONE: break;
  }
  return false;
}

int
site_wait_done (struct site *s, uint64_t seq, bool fall_behind)
{
  struct replicator *r = s->r;
  struct timespec until;
  bool remote = s->id != 0;

  clock_gettime (CLOCK_MONOTONIC, &until);
  until.tv_sec += (time_t) (s->cfg->disconnect_timeout_ms / 1000);
  until.tv_nsec += (long) (s->cfg->disconnect_timeout_ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock (&s->lock);
  s->sync_waiters++;
  while (s->done_seq < seq && s->running && !__atomic_load_n (&r->stop, __ATOMIC_ACQUIRE)) {
    if (remote && (s->disconnected || s->dirty || (!fall_behind && s->catching_up)))
      break;
    if (fall_behind && !site_over_threshold (s, seq))
      break;
    if (!remote)
      pthread_cond_wait (&s->cv, &s->lock);
    else if (pthread_cond_timedwait (&s->cv, &s->lock, &until) == ETIMEDOUT)
      break;                     /* the worker declares it disconnected */
  }
  s->sync_waiters--;
  pthread_mutex_unlock (&s->lock);
  return 0;
}

/* A logged entry touches [off, off + len) of d: for verify (vdev_wgen).
 * Called after the entry is in the overlay and before it is committed. */
static void
wgen_bump (struct vdev *d, uint64_t off, uint64_t len)
{
  uint64_t g, first = off / VDEV_WGEN_GRAIN, last = (off + len - 1) / VDEV_WGEN_GRAIN;

  if (len == 0)
    return;
  if (last - first >= VDEV_WGEN_SLOTS) {
    first = 0;
    last = VDEV_WGEN_SLOTS - 1;
  }
  for (g = first; g <= last; g++)
    __atomic_add_fetch (&d->wgen[g % VDEV_WGEN_SLOTS], 1, __ATOMIC_SEQ_CST);
}

uint64_t
vdev_wgen (struct vdev *d, uint64_t off, uint64_t len)
{
  uint64_t g, first = off / VDEV_WGEN_GRAIN, last = (off + len - 1) / VDEV_WGEN_GRAIN, sum = 0;

  if (len == 0)
    return 0;
  if (last - first >= VDEV_WGEN_SLOTS) {
    first = 0;
    last = VDEV_WGEN_SLOTS - 1;
  }
  for (g = first; g <= last; g++)
    sum += __atomic_load_n (&d->wgen[g % VDEV_WGEN_SLOTS], __ATOMIC_SEQ_CST);
  return sum;
}

/* Log one aligned write chunk. */
static int
log_write (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, uint64_t *seq)
{
  void *payload;
  int r;

  if (replog_reserve (d->r->rl, d->index, RL_OP_WRITE, 0, offset, count, seq, &payload) == -1) {
    rep_error ("device '%s': write: the log refused the entry: %m", d->name);
    return -1;
  }
  if (replog_fill (d->r->rl, *seq, buf) == -1) {
    int e = errno;
    rep_error ("device '%s': write: copying into the log: %m", d->name);
    replog_commit (d->r->rl, *seq);      /* the failed log never ships it */
    errno = e;
    return -1;
  }
  pthread_mutex_lock (&d->ov_lock);
  r = overlay_insert (d->ov, offset, offset + count, *seq, OV_DATA, payload);
  pthread_mutex_unlock (&d->ov_lock);
  wgen_bump (d, offset, count);
  __atomic_add_fetch (&d->r->bytes_logged, count, __ATOMIC_RELAXED);
  /* Committed whatever happened: a reserved entry must not block the log. */
  replog_commit (d->r->rl, *seq);
  if (r == -1) {
    rep_error ("device '%s': write: indexing the entry: %m", d->name);
    return -1;
  }
  return 0;
}

/* A write not aligned to the block size: read the surrounding blocks
 * (device view), patch, and log the aligned span.  One at a time, and no
 * other write of the device in between (safety rule 11). */
static int
rmw_write (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, uint64_t *seq)
{
  uint64_t bs = d->block_size;
  uint64_t s = offset & ~(bs - 1), e = (offset + count + bs - 1) & ~(bs - 1);
  uint8_t *tmp = malloc ((size_t) (e - s));
  int r = -1;

  if (!tmp) {
    rep_error ("malloc: %m");
    return -1;
  }
  pthread_rwlock_wrlock (&d->rmw_lock);
  if (rdev_pread (d, tmp, (uint32_t) (e - s), s) == 0) {
    memcpy (tmp + (offset - s), buf, count);
    r = log_write (d, tmp, (uint32_t) (e - s), s, seq);
  }
  pthread_rwlock_unlock (&d->rmw_lock);
  free (tmp);
  return r;
}

int
rdev_pwrite (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, bool fua)
{
  const uint8_t *p = buf;
  uint64_t seq = 0;

  if (check_range (d, count, offset, "write") == -1)
    return -1;
  if ((offset | count) & (d->block_size - 1)) {
    if (rmw_write (d, buf, count, offset, &seq) == -1)
      return -1;
  }
  else {
    pthread_rwlock_rdlock (&d->rmw_lock);
    while (count) {
      uint32_t n = count > d->max_request ? d->max_request : count;
      if (log_write (d, p, n, offset, &seq) == -1) {
        pthread_rwlock_unlock (&d->rmw_lock);
        return -1;
      }
      p += n;
      offset += n;
      count -= n;
    }
    pthread_rwlock_unlock (&d->rmw_lock);
  }
  __atomic_add_fetch (&d->writes, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch (&d->bytes_written, (uint64_t) (p - (const uint8_t *) buf), __ATOMIC_RELAXED);
  return finish_write (d, seq, fua);
}

/* Write-zeroes and trim: logged as operations without payload; both read
 * back as zeroes (safety rule 10). */
static int
log_zero_op (struct vdev *d, int op, int flags, uint32_t count, uint64_t offset, bool fua)
{
  uint64_t seq;
  int r;

  if (check_range (d, count, offset, op == RL_OP_TRIM ? "trim" : "zero") == -1)
    return -1;
  if (count == 0)
    return finish_write (d, 0, fua);
  if ((offset | count) & (d->block_size - 1)) {
    /* Unaligned head or tail: zero the partial blocks by writing. */
    uint64_t bs = d->block_size;
    uint64_t as = (offset + bs - 1) & ~(bs - 1), ae = (offset + count) & ~(bs - 1);
    uint8_t *z;
    if (as >= ae) {
      if (!(z = calloc (1, count)))
        return -1;
      r = rdev_pwrite (d, z, count, offset, false);
      free (z);
      return r == -1 ? -1 : finish_write (d, 0, fua);
    }
    if (!(z = calloc (1, bs)))
      return -1;
    r = 0;
    if (as > offset)
      r = rdev_pwrite (d, z, (uint32_t) (as - offset), offset, false);
    if (r == 0 && offset + count > ae)
      r = rdev_pwrite (d, z, (uint32_t) (offset + count - ae), ae, false);
    free (z);
    if (r == -1)
      return -1;
    count = (uint32_t) (ae - as);
    offset = as;
  }
  pthread_rwlock_rdlock (&d->rmw_lock);
  if (replog_reserve (d->r->rl, d->index, op, flags, offset, count, &seq, NULL) == -1) {
    pthread_rwlock_unlock (&d->rmw_lock);
    rep_error ("device '%s': the log refused the entry: %m", d->name);
    return -1;
  }
  pthread_mutex_lock (&d->ov_lock);
  r = overlay_insert (d->ov, offset, offset + count, seq, OV_ZERO, NULL);
  pthread_mutex_unlock (&d->ov_lock);
  wgen_bump (d, offset, count);
  pthread_rwlock_unlock (&d->rmw_lock);
  replog_commit (d->r->rl, seq);
  if (r == -1) {
    rep_error ("device '%s': indexing the entry: %m", d->name);
    return -1;
  }
  return finish_write (d, seq, fua);
}

int
rdev_zero (struct vdev *d, uint32_t count, uint64_t offset, bool may_trim, bool fua)
{
  __atomic_add_fetch (&d->zeroes, 1, __ATOMIC_RELAXED);
  return log_zero_op (d, RL_OP_ZERO, may_trim ? RL_FLAG_MAY_TRIM : 0, count, offset, fua);
}

int
rdev_trim (struct vdev *d, uint32_t count, uint64_t offset, bool fua)
{
  __atomic_add_fetch (&d->trims, 1, __ATOMIC_RELAXED);
  return log_zero_op (d, RL_OP_TRIM, 0, count, offset, fua);
}

int
rdev_flush (struct replicator *r)
{
  uint64_t s;

  if (replog_barrier (r->rl, 0, &s) == -1 || replog_wait_durable (r->rl, s) == -1) {
    rep_error ("flush: the log could not be made durable: %m");
    errno = EIO;
    return -1;
  }
  return apply_policies (r, s, "flush");
}

/* ---- status --------------------------------------------------------------------------- */

static const char *
site_link_name (struct site *s)
{
  size_t i, j;
  if (s->id == 0)
    return "local";
  if (__atomic_load_n (&s->paused, __ATOMIC_RELAXED))
    return "paused";
  if (__atomic_load_n (&s->disconnected, __ATOMIC_RELAXED))
    return "disconnected";
  for (i = 0; i < s->r->ndevs; i++)
    for (j = 0; j < s->r->devs[i].nlegs; j++) {
      struct leg *l = &s->r->devs[i].legs[j];
      if (l->site == s->id && l->remote && !__atomic_load_n (&l->link.up, __ATOMIC_RELAXED))
        return "connecting";
    }
  return "connected";
}

/* What status shows for a leg. */
static enum leg_state
leg_state (struct leg *l, enum leg_state raw, uint64_t last)
{
  struct site *s = &l->dev->r->sites[l->site];
  if (l->site == 0)
    return raw;
  if (__atomic_load_n (&s->dirty, __ATOMIC_RELAXED))
    return LEG_DIRTY;
  if (__atomic_load_n (&s->resyncing, __ATOMIC_RELAXED))
    return LEG_RESYNCING;
  if (__atomic_load_n (&s->disconnected, __ATOMIC_RELAXED))
    return LEG_DISCONNECTED;
  if (raw == LEG_FAILED)
    return raw;
  if (__atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) != FB_NONE && site_over_threshold (s, last))
    return LEG_BEHIND;
  return LEG_REPLICATING;
}

static json_object *
jstr (const char *s)
{
  return json_object_new_string (s ? s : "");
}

/* Regions a site's legs still miss (their dirty logs). */
static uint64_t
site_dirty_regions (struct site *s)
{
  struct replicator *r = s->r;
  uint64_t n = 0;
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++)
      if (r->devs[i].legs[j].site == s->id && r->devs[i].legs[j].dirty)
        n += bitmap_count (r->devs[i].legs[j].dirty);
  return n;
}

static json_object *
site_resync_json (struct site *s)
{
  json_object *o = json_object_new_object ();
  uint64_t left = site_dirty_regions (s);
  bool active = __atomic_load_n (&s->resyncing, __ATOMIC_RELAXED);
  uint64_t copied = __atomic_load_n (&s->resync_copied, __ATOMIC_RELAXED);
  uint64_t bytes = __atomic_load_n (&s->resync_bytes, __ATOMIC_RELAXED);
  uint64_t zbytes = __atomic_load_n (&s->resync_zero_bytes, __ATOMIC_RELAXED);
  double secs = 0, rate = 0, eta = -1;

  if (active) {
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    secs = ((double) ts.tv_sec * 1e9 + (double) ts.tv_nsec - (double) s->resync_started_ns) / 1e9;
    if (secs > 0.5 && copied) {
      rate = (double) copied / secs;       /* regions per second */
      eta = (double) left / rate;
    }
  }
  json_object_object_add (o, "active", json_object_new_boolean (active));
  json_object_object_add (o, "regions_total", json_object_new_int64 ((int64_t) __atomic_load_n (&s->resync_regions, __ATOMIC_RELAXED)));
  json_object_object_add (o, "regions_copied", json_object_new_int64 ((int64_t) copied));
  json_object_object_add (o, "regions_left", json_object_new_int64 ((int64_t) left));
  json_object_object_add (o, "bytes_copied", json_object_new_int64 ((int64_t) bytes));
  json_object_object_add (o, "bytes_zeroed", json_object_new_int64 ((int64_t) zbytes));
  json_object_object_add (o, "bytes_per_second", json_object_new_double (
    active && secs > 0.5 ? (double) (bytes + zbytes) / secs : 0));
  json_object_object_add (o, "eta_seconds", json_object_new_double (eta));
  json_object_object_add (o, "rate_limit", json_object_new_int64 ((int64_t) s->cfg->resync_rate));
  json_object_object_add (o, "finished", json_object_new_int64 ((int64_t) __atomic_load_n (&s->resyncs, __ATOMIC_RELAXED)));
  return o;
}

static json_object *
site_verify_json (struct replicator *r, struct site *s)
{
  json_object *o = json_object_new_object ();
  bool active = __atomic_load_n (&s->verify_active, __ATOMIC_ACQUIRE);
  bool ran = __atomic_load_n (&s->verifies, __ATOMIC_RELAXED) || active;
  json_object_object_add (o, "active", json_object_new_boolean (active));
  json_object_object_add (o, "device", json_object_new_string (
    ran && s->verify_dev < r->ndevs ? r->devs[s->verify_dev].name : ""));
  json_object_object_add (o, "regions_total", json_object_new_int64 ((int64_t) s->verify_total));
  json_object_object_add (o, "regions_checked", json_object_new_int64 (
    (int64_t) __atomic_load_n (&s->verify_checked, __ATOMIC_RELAXED)));
  json_object_object_add (o, "regions_differing", json_object_new_int64 (
    (int64_t) __atomic_load_n (&s->verify_differing, __ATOMIC_RELAXED)));
  json_object_object_add (o, "regions_busy", json_object_new_int64 (
    (int64_t) __atomic_load_n (&s->verify_busy, __ATOMIC_RELAXED)));
  json_object_object_add (o, "mark", json_object_new_boolean (s->verify_mark));
  json_object_object_add (o, "finished", json_object_new_int64 ((int64_t) __atomic_load_n (&s->verifies, __ATOMIC_RELAXED)));
  pthread_mutex_lock (&s->lock);
  json_object_object_add (o, "error", json_object_new_string (active ? "" : s->verify_error));
  pthread_mutex_unlock (&s->lock);
  return o;
}

json_object *
replicator_status_obj (struct replicator *r)
{
  json_object *root = json_object_new_object ();
  json_object *log = json_object_new_object ();
  json_object *sites = json_object_new_array ();
  json_object *devs = json_object_new_array ();
  struct replog_stats st;
  size_t i, j;

  replog_get_stats (r->rl, &st);
  json_object_object_add (root, "version", jstr (PACKAGE_VERSION));
  json_object_object_add (root, "engine", jstr (r->engine ? r->engine : "stopped"));
  json_object_object_add (root, "started", json_object_new_int64 ((int64_t) r->started));

  json_object_object_add (log, "path", jstr (r->cfg->replog.path));
  json_object_object_add (log, "health", jstr (st.failed ? "failed" : "ok"));
  json_object_object_add (log, "size", json_object_new_int64 ((int64_t) st.size));
  json_object_object_add (log, "slots", json_object_new_int64 ((int64_t) st.ndesc));
  json_object_object_add (log, "entries", json_object_new_int64 ((int64_t) (st.next_seq - st.tail_seq)));
  json_object_object_add (log, "data_blocks", json_object_new_int64 ((int64_t) st.data_blocks));
  json_object_object_add (log, "data_used_blocks", json_object_new_int64 ((int64_t) st.data_used_blocks));
  json_object_object_add (log, "fill_percent", json_object_new_double (
    100.0 * (double) (st.data_used_blocks > (st.next_seq - st.tail_seq) * st.data_blocks / st.ndesc
                      ? st.data_used_blocks : (st.next_seq - st.tail_seq) * st.data_blocks / st.ndesc)
    / (double) st.data_blocks));
  json_object_object_add (log, "next_seq", json_object_new_int64 ((int64_t) st.next_seq));
  json_object_object_add (log, "durable_seq", json_object_new_int64 ((int64_t) st.durable_seq));
  json_object_object_add (log, "epoch", json_object_new_int64 ((int64_t) st.epoch));
  json_object_object_add (log, "syncs", json_object_new_int64 ((int64_t) st.syncs));
  json_object_object_add (log, "header_writes", json_object_new_int64 ((int64_t) st.header_writes));
  json_object_object_add (log, "full_waits", json_object_new_int64 ((int64_t) st.space_waits));
  json_object_object_add (log, "recovered_entries", json_object_new_int64 ((int64_t) r->rec.entries));
  json_object_object_add (root, "log", log);

  for (i = 0; i < CFG_MAX_SITES; i++) {
    struct site *s = &r->sites[i];
    json_object *js;
    uint64_t applied;
    if (!s->cfg)
      continue;
    js = json_object_new_object ();
    applied = replog_applied (r->rl, s->id);
    json_object_object_add (js, "id", json_object_new_int ((int) s->id));
    json_object_object_add (js, "policy", jstr (cfg_policy_name (__atomic_load_n (&s->policy, __ATOMIC_RELAXED))));
    json_object_object_add (js, "link", jstr (site_link_name (s)));
    bool dirty = __atomic_load_n (&s->dirty, __ATOMIC_RELAXED);
    json_object_object_add (js, "mode", jstr (dirty ? "dirty" :
                                              __atomic_load_n (&s->resyncing, __ATOMIC_RELAXED) ? "resync" : "log"));
    json_object_object_add (js, "applied_seq", json_object_new_int64 ((int64_t) applied));
    pthread_mutex_lock (&s->lock);
    if (s->cons_valid && !__atomic_load_n (&s->in_doubt, __ATOMIC_RELAXED)) {
      json_object *cp = json_object_new_object ();
      json_object_object_add (cp, "seq", json_object_new_int64 ((int64_t) s->cons_seq));
      if (s->cons_time_ns) {
        char tb[40];
        time_t t = (time_t) (s->cons_time_ns / 1000000000u);
        struct tm tm;
        gmtime_r (&t, &tm);
        strftime (tb, sizeof tb, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_object_add (cp, "time", json_object_new_string (tb));
        json_object_object_add (cp, "age_seconds", json_object_new_double (
          (double) time (NULL) - (double) s->cons_time_ns / 1e9));
      }
      else
        json_object_object_add (cp, "time", NULL);
      json_object_object_add (js, "consistent_point", cp);
    }
    else
      json_object_object_add (js, "consistent_point", NULL);
    pthread_mutex_unlock (&s->lock);
    json_object_object_add (js, "done_seq", json_object_new_int64 (
      (int64_t) __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED)));
    if (dirty) {
      json_object_object_add (js, "backlog_entries", json_object_new_int64 (0));
      json_object_object_add (js, "backlog_bytes", json_object_new_int64 (0));
      json_object_object_add (js, "rpo_seconds", json_object_new_double (0));
    }
    else {
      json_object_object_add (js, "backlog_entries", json_object_new_int64 (
        (int64_t) site_backlog_entries (s, st.committed_seq)));
      json_object_object_add (js, "backlog_bytes", json_object_new_int64 (
        (int64_t) site_backlog_bytes (s)));
      json_object_object_add (js, "rpo_seconds", json_object_new_double (
        (double) site_oldest_age_ms (s, st.committed_seq) / 1000.0));
    }
    {
      char fb[64];
      cfg_format_fall_behind (__atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED), __atomic_load_n (&s->fall_behind_value, __ATOMIC_RELAXED), fb, sizeof fb);
      json_object_object_add (js, "fall_behind", jstr (fb));
    }
    json_object_object_add (js, "behind", json_object_new_boolean (
      !dirty && __atomic_load_n (&s->fall_behind, __ATOMIC_RELAXED) != FB_NONE && site_over_threshold (s, st.committed_seq)));
    json_object_object_add (js, "disconnect_timeout_ms", json_object_new_int64 ((int64_t) s->cfg->disconnect_timeout_ms));
    json_object_object_add (js, "pull_ahead_ms", json_object_new_int64 ((int64_t) s->cfg->pull_ahead_ms));
    json_object_object_add (js, "disconnects", json_object_new_int64 ((int64_t) __atomic_load_n (&s->disconnects, __ATOMIC_RELAXED)));
    json_object_object_add (js, "resync", site_resync_json (s));   /* site 0: restores */
    if (s->id)
      json_object_object_add (js, "verify", site_verify_json (r, s));
    json_object_array_add (sites, js);
  }
  json_object_object_add (root, "sites", sites);

  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    json_object *jd = json_object_new_object (), *legs = json_object_new_array ();
    json_object_object_add (jd, "name", jstr (d->name));
    json_object_object_add (jd, "size", json_object_new_int64 ((int64_t) d->size));
    json_object_object_add (jd, "block_size", json_object_new_int ((int) d->block_size));
    json_object_object_add (jd, "max_request", json_object_new_int64 (d->max_request));
    json_object_object_add (jd, "served_from", json_object_new_int (
      (int) __atomic_load_n (&d->serving, __ATOMIC_RELAXED)));
    json_object_object_add (jd, "local_out", json_object_new_boolean (d->local_out));
    pthread_mutex_lock (&d->ov_lock);
    json_object_object_add (jd, "unapplied_extents", json_object_new_int64 ((int64_t) overlay_count (d->ov)));
    pthread_mutex_unlock (&d->ov_lock);
    json_object_object_add (jd, "reads", json_object_new_int64 ((int64_t) __atomic_load_n (&d->reads, __ATOMIC_RELAXED)));
    json_object_object_add (jd, "writes", json_object_new_int64 ((int64_t) __atomic_load_n (&d->writes, __ATOMIC_RELAXED)));
    for (j = 0; j < d->nlegs; j++) {
      struct leg *l = &d->legs[j];
      json_object *jl = json_object_new_object ();
      enum leg_state ls = __atomic_load_n (&l->state, __ATOMIC_RELAXED);
      struct bitmap *db = __atomic_load_n (&l->doubt, __ATOMIC_ACQUIRE);
      uint64_t doubt = db ? bitmap_count (db) : 0;
      ls = leg_state (l, ls, st.committed_seq);
      json_object_object_add (jl, "site", json_object_new_int ((int) l->site));
      json_object_object_add (jl, "path", jstr (l->remote ? l->link.shown : l->cfg->path));
      json_object_object_add (jl, "transport", jstr (l->cfg->transport == TRANSPORT_NBD ? "nbd" :
                                                     l->cfg->transport == TRANSPORT_ISCSI ? "iscsi" : "path"));
      json_object_object_add (jl, "state", jstr (leg_state_name (ls)));
      json_object_object_add (jl, "consistent", json_object_new_boolean (
        (ls == LEG_REPLICATING || ls == LEG_BEHIND || ls == LEG_DISCONNECTED) && doubt == 0 &&
        !__atomic_load_n (&r->sites[l->site].in_doubt, __ATOMIC_RELAXED)));
      json_object_object_add (jl, "errors", json_object_new_int64 ((int64_t) __atomic_load_n (&l->errors, __ATOMIC_RELAXED)));
      if (l->site == 0)
        json_object_object_add (jl, "direct_io", json_object_new_boolean (l->direct));
      else {
        json_object_object_add (jl, "region_size", json_object_new_int64 ((int64_t) l->cfg->dirty_log.region_size));
        json_object_object_add (jl, "dirty_regions", json_object_new_int64 (
          l->dirty ? (int64_t) bitmap_count (l->dirty) : 0));
        json_object_object_add (jl, "in_doubt_regions", json_object_new_int64 ((int64_t) doubt));
        if (l->dlog) {
          json_object *jdl = json_object_new_object ();
          json_object_object_add (jdl, "path", jstr (dlog_path (l->dlog)));
          json_object_object_add (jdl, "health", jstr (__atomic_load_n (&l->dlog_failed, __ATOMIC_ACQUIRE) ?
                                                      "failed" : "ok"));
          json_object_object_add (jl, "dirty_log", jdl);
        }
        json_object_object_add (jl, "initial_sync", jstr (__atomic_load_n (&l->initial_sync, __ATOMIC_RELAXED) ? "pending" : "done"));
      }
      if (l->remote) {
        char err[256];
        /* The leg's own I/O error (set by its worker) first, else the
         * connection's.  Bounded copy: the worker may be rewriting it. */
        snprintf (err, sizeof err, "%.*s", (int) sizeof l->last_error - 1, l->last_error);
        if (!err[0])
          rlink_get_error (&l->link, err, sizeof err);
        json_object_object_add (jl, "link", jstr (__atomic_load_n (&l->link.up, __ATOMIC_RELAXED) ? "up" : "down"));
        json_object_object_add (jl, "connects", json_object_new_int64 ((int64_t) __atomic_load_n (&l->link.connects, __ATOMIC_RELAXED)));
        json_object_object_add (jl, "drops", json_object_new_int64 ((int64_t) __atomic_load_n (&l->link.drops, __ATOMIC_RELAXED)));
        json_object_object_add (jl, "last_error", jstr (err));
      }
      json_object_array_add (legs, jl);
    }
    json_object_object_add (jd, "legs", legs);
    json_object_array_add (devs, jd);
  }
  json_object_object_add (root, "devices", devs);
  return root;
}

char *
replicator_status_json (struct replicator *r, bool pretty)
{
  json_object *root = replicator_status_obj (r);
  char *out = strdup (json_object_to_json_string_ext (root, pretty ? JSON_C_TO_STRING_PRETTY : JSON_C_TO_STRING_PLAIN));
  json_object_put (root);
  return out;
}

/* ---- administrator's commands ----------------------------------------------------- */

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
  if (full)
    __atomic_fetch_or (&s->resync_full_devs, 1u << d->index, __ATOMIC_RELEASE);
  else if (!__atomic_load_n (&s->dirty, __ATOMIC_RELAXED) &&
           !__atomic_load_n (&s->resyncing, __ATOMIC_RELAXED) && !site_dirty_regions (s)) {
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
replicator_pause (struct replicator *r, unsigned site, bool pause, char *why, size_t len)
{
  struct site *s = remote_site (r, site, why, len);
  if (!s)
    return -1;
  if (__atomic_exchange_n (&s->paused, pause, __ATOMIC_ACQ_REL) == pause) {
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

/* ---- the local leg out of service -------------------------------------------------- */

struct carry {
  struct overlay *to;
  uint64_t after;
  bool (*on_leg) (void *, uint64_t);
  void *opaque;
  int err;
};

static void
carry_piece (const struct ov_piece *p, void *opaque)
{
  struct carry *c = opaque;
  if (p->seq > c->after && !c->err && !(c->on_leg && c->on_leg (c->opaque, p->seq)) &&
      overlay_insert (c->to, p->start, p->end, p->seq, p->kind,
                      p->src ? p->src + (p->start - p->eoff) : NULL) == -1)
    c->err = errno;
}

int
vdev_overlay_reset (struct vdev *d, uint64_t after, bool (*on_leg) (void *, uint64_t),
                    void *opaque)
{
  struct overlay *nov = overlay_new ();
  struct carry c = { .to = nov, .after = after, .on_leg = on_leg, .opaque = opaque };
  struct replog_stats st;
  uint64_t seq;

  if (!nov)
    return -1;
  /* What the index has after `after` (including entries of writers that
   * are not committed yet), plus every committed entry after it. */
  overlay_foreach (d->ov, 0, UINT64_MAX, carry_piece, &c);
  replog_get_stats (d->r->rl, &st);
  for (seq = after + 1; !c.err && seq <= st.committed_seq; seq++) {
    const struct rl_desc *e = replog_desc (d->r->rl, seq);
    if (e->seq != seq || e->op == RL_OP_BARRIER || e->device != d->index ||
        (on_leg && on_leg (opaque, seq)))
      continue;
    if (overlay_insert (nov, e->offset, e->offset + e->length, seq,
                        e->op == RL_OP_WRITE ? OV_DATA : OV_ZERO,
                        e->op == RL_OP_WRITE ? replog_payload (d->r->rl, e) : NULL) == -1)
      c.err = errno;
  }
  if (c.err) {
    overlay_free (nov);
    errno = c.err;
    return -1;
  }
  overlay_free (d->ov);
  d->ov = nov;
  return 0;
}

unsigned
vdev_pick_server (struct vdev *d)
{
  struct replicator *r = d->r;
  unsigned best = 0;
  uint64_t best_done = 0;
  size_t j;

  for (j = 0; j < d->nlegs; j++) {
    struct site *s = &r->sites[d->legs[j].site];
    uint64_t done;
    if (s->id == 0 || !s->running || __atomic_load_n (&s->dirty, __ATOMIC_RELAXED) ||
        __atomic_load_n (&s->resyncing, __ATOMIC_RELAXED) || __atomic_load_n (&s->in_doubt, __ATOMIC_RELAXED))
      continue;
    pthread_mutex_lock (&s->lock);
    done = __atomic_load_n (&s->done_seq, __ATOMIC_RELAXED);
    pthread_mutex_unlock (&s->lock);
    if (!best || done > best_done ||
        (done == best_done && !__atomic_load_n (&s->disconnected, __ATOMIC_RELAXED))) {
      best = s->id;
      best_done = done;
    }
  }
  return best;
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
  if (!d->serving) {
    snprintf (why, len, "no remote site serves device '%s' (none is up to date): nothing to "
              "restore from", device);
    return -1;
  }
  if (site != d->serving) {
    snprintf (why, len, "device '%s' is served from site %u: restore from that site", device,
              d->serving);
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
