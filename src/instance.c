/* instance.c: one instance's lifecycle (layer 6, the top): construction,
 * start and stop.
 *
 * Owns: building the object graph from the configuration (sites, devices,
 * legs: path legs opened, remote legs connected once, dirty logs opened),
 * opening and recovering the log, each site's state at start (site.c
 * decides it from the log header), the state of devices whose local leg
 * was out of service, rebuilding the overlay; the log's callbacks for
 * released entries and dirty-log syncs; starting and stopping the
 * workers, verify, metrics and events.  Invariants: nothing runs before
 * replicator_start; every lock and descriptor made here is freed by
 * replicator_free, also after a failed construction.  Calls down: every
 * lower layer (it registers worker_poke as r->poke for the device view).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dirtylog.h"
#include "failback.h"
#include "leg-label.h"
#include "stream.h"
#include "event.h"
#include "link.h"
#include "pftrace.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define MAX_REQUEST_CAP   (32u << 20)   /* we never advertise more */

static void
vdev_destroy (struct vdev *d)
{
  size_t i;
  for (i = 0; i < d->nlegs && d->legs; i++) {
    if (d->legs[i].fd >= 0)
      close (d->legs[i].fd);
    if (d->legs[i].reopen_fd >= 0)
      close (d->legs[i].reopen_fd);
    leglabel_close (&d->legs[i]);
    rreader_destroy (&d->legs[i].reader);
    rlink_destroy (&d->legs[i].link);
    dlog_close (d->legs[i].dlog);
    bitmap_free (d->legs[i].dirty_log);
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
  leglabel_thread_stop (r);              /* if replicator_stop did not run */
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
local_out_init (struct replicator *r, uint32_t label_out)
{
  size_t i, j;

  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    unsigned best = 0;
    uint64_t best_applied = 0;
    if (!(replog_dev_flags (r->rl, d->index) & RL_DEV_LOCAL_OUT) && !(label_out & (1u << i)))
      continue;
    d->local_out = true;
    d->local->state = LEG_FAILED;
    d->local->stale = true;
    for (j = 0; j < d->nlegs; j++) {
      unsigned id = d->legs[j].site;
      uint64_t a;
      if (id == 0 || site_state_is_dirty_log (site_state (&r->sites[id])) || replog_site_mode (r->rl, id) != RL_MODE_LOG ||
          replog_site_flags (r->rl, id))
        continue;
      a = replog_applied (r->rl, id);
      if (!best || a > best_applied) {
        best = id;
        best_applied = a;
      }
    }
    d->read_site = best;
    if (best) {
      r->sites[best].read_site_devs |= 1u << d->index;
      rep_warn ("device '%s': the local leg %s was out of service at the last stop; reads "
                "and writes go through site %u until 'replctl restore %s --from %u'", d->name,
                d->local->cfg->path, best, d->name, best);
    }
    else
      rep_error ("device '%s': the local leg %s was out of service at the last stop and no "
                 "remote site is a consistent copy: reads fail", d->name, d->local->cfg->path);
  }
}

/* Rebuild the overlay from the recovered entries the leg each device's
 * reads go through (the local leg, or a remote one) has not applied. */
static int
rebuild_overlay (struct replicator *r)
{
  uint64_t seq, from = replog_applied (r->rl, 0) + 1, n = 0;
  uint64_t after[RL_MAX_DEVICES];
  size_t i;

  for (i = 0; i < r->ndevs; i++) {
    after[i] = replog_applied (r->rl, r->devs[i].read_site);
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
    if (!(l->dirty_log = bitmap_new (d->size, l->cfg->dirty_log.region_size))) {
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
    pthread_mutex_init (&l->lb.lock, NULL);
    l->lb.where = l->cfg->label;
    l->lb.fd = -1;
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
    l->link.min_size = d->size + leglabel_room (l, d->size);
    if (d->r->cfg->failback)
      continue;                  /* a failback run connects to no remote */
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
    l->link.down_since_ns = mono_ns ();
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

  if (dlog_open (l->cfg->dirty_log.path, &id, l->dirty_log, &l->dlog, &info, err, sizeof err) == -1) {
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
      bitmap_set_all (l->dirty_log);
      __atomic_store_n (&l->dlog_failed, true, __ATOMIC_RELEASE);
      dlog_invalidate (l->dlog);
      lost |= 1u << l->site;
    }
  return lost;
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
    if ((sites & (1u << l->site)) && l->dirty_log)
      bitmap_set_range (l->dirty_log, d->offset, d->length);
  }
}

/* The sites of the configuration: policy, lock and cv (CLOCK_MONOTONIC). */
static void
sites_init (struct replicator *r, struct cfg *cfg)
{
  size_t i;

  for (i = 0; i < cfg->nsites; i++) {
    struct site *s = &r->sites[cfg->sites[i].id];
    pthread_condattr_t ca;
    s->r = r;
    s->id = cfg->sites[i].id;
    s->cfg = &cfg->sites[i];
    s->policy = s->cfg->policy;
    s->fall_behind = s->cfg->fall_behind;
    s->fall_behind_value = s->cfg->fall_behind_value;
    pthread_mutex_init (&s->lock, NULL);
    pthread_condattr_init (&ca);
    pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
    pthread_cond_init (&s->cv, &ca);
    pthread_condattr_destroy (&ca);
    r->site_mask |= 1u << s->id;
  }
}

/* Device i's structure, locks, overlay and legs (not opened yet): 0, or
 * -1 (reported).  Counted in r->ndevs once its locks exist. */
static int
vdev_init (struct replicator *r, size_t i)
{
  struct vdev *d = &r->devs[i];
  const struct cfg_device *cd = &r->cfg->devices[i];
  pthread_rwlockattr_t ra;
  size_t j;

  d->r = r;
  d->index = (unsigned) i;
  d->cfg = cd;
  d->name = cd->name;
  pthread_mutex_init (&d->ov_lock, NULL);
  /* Writers first: a stream of aligned writes must not starve an RMW. */
  pthread_rwlockattr_init (&ra);
  pthread_rwlockattr_setkind_np (&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&d->rmw_lock, &ra);
  pthread_rwlockattr_destroy (&ra);
  r->ndevs++;
  if (!(d->ov = overlay_new ()) || !(d->legs = calloc (cd->nlegs, sizeof *d->legs))) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (j = 0; j < cd->nlegs; j++) {
    d->legs[j].fd = -1;
    d->legs[j].dev = d;
    d->legs[j].site = cd->legs[j].site;
    d->legs[j].cfg = &cd->legs[j];
    d->legs[j].state = LEG_REPLICATING;
    d->legs[j].reopen_fd = -1;
  }
  d->nlegs = cd->nlegs;
  return 0;
}

/* Path legs (the local one, and files or block devices at remote sites)
 * are opened now; their block sizes make the device's (*bs). */
static int
vdev_open_path_legs (struct vdev *d, uint32_t *bs)
{
  size_t j;

  for (j = 0; j < d->nlegs; j++) {
    struct leg *l = &d->legs[j];
    if (l->cfg->transport != TRANSPORT_PATH)
      continue;
    if (l->site == 0)
      d->local = l;
    if (leg_open_local (l, d->cfg->legs[j].path) == -1 || leglabel_open_path (l) == -1)
      return -1;
    if (l->lbs > *bs)
      *bs = l->lbs;
  }
  return 0;
}

/* The device's size (configured, or the local leg's), checked against its
 * path legs and block size bs. */
static int
vdev_check_size (struct vdev *d, uint32_t bs)
{
  size_t j;

  d->size = d->cfg->size ? d->cfg->size : d->local->size;
  if (d->local->lb.where == LABEL_END && !d->cfg->size)
    d->size = leglabel_dev_size (d->local) ? leglabel_dev_size (d->local)
      : lbl_dev_size_for_leg (d->local->size, (uint32_t) d->local->cfg->dirty_log.region_size);
  if (d->size == 0) {
    rep_error ("device '%s': size is 0 (the local leg %s is empty%s; set size=)", d->name,
               d->local->cfg->path, d->local->lb.where == LABEL_END ? " or too small for its label" : "");
    return -1;
  }
  if (leglabel_dev_size (d->local) && leglabel_dev_size (d->local) != d->size) {
    rep_error ("device '%s': the local leg %s is labelled for a device of %" PRIu64 " bytes, "
               "not %" PRIu64, d->name, d->local->cfg->path, leglabel_dev_size (d->local), d->size);
    return -1;
  }
  if (!(d->local->dirty_log = bitmap_new (d->size, d->local->cfg->dirty_log.region_size))) {
    rep_error ("device '%s': out of memory", d->name);
    return -1;
  }
  if (d->local->size < d->size + leglabel_room (d->local, d->size)) {
    rep_error ("device '%s': local leg %s is smaller (%" PRIu64 " bytes) than the device (%" PRIu64
               " bytes)%s", d->name, d->local->cfg->path, d->local->size, d->size,
               leglabel_room (d->local, d->size) ? " and its label area" : "");
    return -1;
  }
  if (d->size % bs) {
    rep_error ("device '%s': size %" PRIu64 " is not a multiple of the block size %u",
               d->name, d->size, bs);
    return -1;
  }
  for (j = 0; j < d->nlegs; j++) {
    struct leg *l = &d->legs[j];
    if (l->site == 0 || l->cfg->transport != TRANSPORT_PATH)
      continue;
    if (l->size < d->size + leglabel_room (l, d->size)) {
      rep_error ("device '%s': leg %s at site %u is smaller (%" PRIu64 " bytes) than the device "
                 "(%" PRIu64 " bytes)%s", d->name, l->cfg->path, l->site, l->size, d->size,
                 leglabel_room (l, d->size) ? " and its label area" : "");
      return -1;
    }
  }
  return 0;
}

/* Every device: built, legs opened or connected, sizes checked; ids gets
 * what the log records of each. */
static int
devices_init (struct replicator *r, struct replog_dev_id *ids)
{
  size_t i;

  if (!(r->devs = calloc (r->cfg->ndevices, sizeof *r->devs))) {
    rep_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < r->cfg->ndevices; i++) {
    struct vdev *d = &r->devs[i];
    uint32_t bs = 512;

    if (vdev_init (r, i) == -1 || vdev_open_path_legs (d, &bs) == -1 ||
        vdev_check_size (d, bs) == -1)
      return -1;
    d->block_size = bs;
    if (remote_legs_init (d) == -1)
      return -1;
    ids[i].name = d->name;
    ids[i].size = d->size;
    ids[i].block_size = bs;
  }
  return 0;
}

/* Open (or create) the log and recover it; its callbacks. */
static int
log_open (struct replicator *r, struct replog_dev_id *ids)
{
  const struct cfg *cfg = r->cfg;
  struct replog_open_args oa;
  struct replog_identity id;

  if (leglabel_propose (r, &id) == -1)
    return -1;
  memset (&oa, 0, sizeof oa);
  oa.identity = &id;
  oa.path = cfg->replog.path;
  oa.offset = cfg->replog.offset;
  oa.size = cfg->replog.size;
  oa.mode = cfg->replog.mode;
  oa.commit_interval_ms = cfg->replog.commit_interval_ms;
  oa.ndevices = (unsigned) cfg->ndevices;
  oa.devices = ids;
  oa.sites = r->site_mask;
  oa.log_sites = trusted_sites (r) | leglabel_handover_sites (r, &id);
  if (replog_open (&oa, &r->rl, &r->rec) == -1)
    return -1;
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
  return 0;
}

/* Once the log is open (its identity known): the path legs' labels are
 * checked (a local leg that is not the device's any more goes out of
 * service: bit in *out), the remote legs connected at start are checked
 * as the connector will check every later connection. */
static int
labels_init (struct replicator *r, uint32_t *out)
{
  uint32_t trusted = trusted_sites (r);
  size_t i, j;

  *out = 0;
  for (i = 0; i < r->ndevs; i++) {
    struct vdev *d = &r->devs[i];
    bool oos;
    for (j = 0; j < d->nlegs; j++) {
      struct leg *l = &d->legs[j];
      l->lb.trust_new = r->rec.identity_new ||
        ((r->rec.new_sites & trusted) & (1u << l->site));
    }
    if (leglabel_check_path_legs (d, &oos) == -1)
      return -1;
    if (oos)
      *out |= 1u << i;
    for (j = 0; j < d->nlegs; j++) {
      struct leg *l = &d->legs[j];
      char err[512];
      if (!l->remote)
        continue;
      if (l->link.conn && stream_check (l, l->link.conn, l->link.ops, &l->link.info,
                                        err, sizeof err) == -1) {
        l->link.ops->close (l->link.conn);
        l->link.conn = NULL;
        l->link.up = false;
        l->link.connects--;
        rlink_set_error (&l->link, "%s", err);
        l->link.down_since_ns = mono_ns ();
        if (l->lb.cls == LC_NEWER) {
          rep_error ("device '%s': this instance was failed over: %s (site %u): not starting "
                     "as the primary; add takeover=yes only if that copy is to be overwritten",
                     d->name, l->lb.detail, l->site);
          if (!r->cfg->takeover)
            return -1;
        }
      }
      l->link.check = stream_check;       /* the label's check, then the stream's */
      l->link.check_opaque = l;
    }
  }
  return 0;
}

/* Largest request: a power of two <= 1/8 of the data ring, <= 32M. */
static int
max_request_init (struct replicator *r)
{
  struct replog_stats st;
  uint64_t cap;
  size_t i;

  replog_get_stats (r->rl, &st);
  cap = st.data_blocks * RL_BLOCK / 8;
  if (cap > MAX_REQUEST_CAP)
    cap = MAX_REQUEST_CAP;
  for (i = 0; i < r->ndevs; i++) {
    r->devs[i].max_request = pow2_floor (cap);
    if (r->devs[i].max_request < r->devs[i].block_size || r->devs[i].max_request < 65536) {
      rep_error ("replog %s: too small for device '%s' (largest request %u bytes)",
                 r->cfg->replog.path, r->devs[i].name, r->devs[i].max_request);
      return -1;
    }
  }
  return 0;
}

struct replicator *
replicator_new (struct cfg *cfg)
{
  struct replicator *r = calloc (1, sizeof *r);
  struct replog_dev_id ids[RL_MAX_DEVICES];
  const char *env;
  uint32_t label_out;
  size_t i;

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
  if ((env = getenv ("NBD_REPLICATOR_LABEL_INTERVAL_MS")) && atoi (env) > 0)
    r->label_check_ns = (uint64_t) atoi (env) * 1000000;   /* tests: labels checked often */
  r->poke = worker_poke;
  /* The metrics port first: a port in use must not leave a new log behind. */
  if (cfg->metrics.listen && metrics_http_open (r, cfg->metrics.listen) == -1)
    goto err;
  if (cfg->ndevices > RL_MAX_DEVICES) {
    rep_error ("%s: at most %d devices share one log", cfg->source, RL_MAX_DEVICES);
    goto err;
  }
  sites_init (r, cfg);
  if (devices_init (r, ids) == -1 || log_open (r, ids) == -1 || labels_init (r, &label_out) == -1)
    goto err;
  for (i = 1; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg)
      site_start_mode (r, &r->sites[i]);
  if (max_request_init (r) == -1)
    goto err;
  if (label_out)
    for (i = 0; i < r->ndevs; i++)
      if ((label_out & (1u << i)) &&
          replog_change_dev_flags (r->rl, r->devs[i].index, RL_DEV_LOCAL_OUT, 0) == -1)
        goto err;
  local_out_init (r, label_out);
  if (rebuild_overlay (r) == -1)
    goto err;
  if (cfg->failback && failback_record (r) == -1)
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
  if (replog_start (r->rl) == -1 || leglabel_thread_start (r) == -1)
    return -1;
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg && worker_start (&r->sites[i]) == -1)
      return -1;
  return 0;
}

/* A clean stop: the legs that hold every entry say so on their labels
 * (the stop drained the log to them): the local legs, and the legs of a
 * remote site in log mode, consistent and connected at the end (through
 * their reader connection: a leg that was unreachable is skipped, so
 * that the stop stays bounded). */
static void
labels_at_stop (struct replicator *r)
{
  struct replog_stats st;
  size_t i, j;

  if (!r->rl)
    return;
  replog_get_stats (r->rl, &st);
  if (st.failed)
    return;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      struct site *s = &r->sites[l->site];
      uint64_t applied = replog_applied (r->rl, l->site);
      if (l->lb.where == LABEL_NONE || l->lb.refused || applied + 1 < st.next_seq ||
          l->state == LEG_FAILED)
        continue;
      if (l->site == 0 ? r->devs[i].local_out :
          replog_site_mode (r->rl, l->site) != RL_MODE_LOG || replog_site_flags (r->rl, l->site) ||
          site_state_is_disconnected (site_state (s)) || (l->remote && !l->link.connects))
        continue;
      leglabel_write (l, LBL_CONSISTENT | LBL_CLEAN, applied, 0);
    }
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
  leglabel_thread_stop (r);
  replog_stop (r->rl);
  labels_at_stop (r);
  metrics_http_stop ();
  event_stop (2000);                     /* the hooks of the last changes, bounded */
}

