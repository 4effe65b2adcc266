/* status.c: the status document (layer 5; replctl status, and metrics.c
 * builds its figures from it).
 *
 * Owns: the JSON document: version, the log, each site (its state, policy,
 * backlog, consistent point, resync and verify progress), each device and
 * its legs.  A site's state is decoded once per document (site_state) and
 * what status shows for it follows from that value alone (the table in
 * site.c).  Reads counters with atomic loads; takes a site's lock for its
 * consistent point and verify error, a device's ov_lock for its overlay.
 * Calls down only: site.c, leg.c, the log, links, dirty logs.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "dirtylog.h"
#include "link.h"
#include "leg-label.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

#define LOAD(x) __atomic_load_n (&(x), __ATOMIC_RELAXED)

static json_object *
jstr (const char *s)
{
  return json_object_new_string (s ? s : "");
}

static json_object *
jint (uint64_t v)
{
  return json_object_new_int64 ((int64_t) v);
}

static void
add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

/* ---- the log ---------------------------------------------------------- */

static json_object *
log_json (struct replicator *r, const struct replog_stats *st)
{
  json_object *log = json_object_new_object ();
  uint64_t entries = st->next_seq - st->tail_seq;
  uint64_t by_slots = entries * st->data_blocks / st->ndesc;

  add (log, "path", jstr (r->cfg->replog.path));
  add (log, "health", jstr (st->failed ? "failed" : "ok"));
  add (log, "size", jint (st->size));
  add (log, "slots", jint (st->ndesc));
  add (log, "entries", jint (entries));
  add (log, "data_blocks", jint (st->data_blocks));
  add (log, "data_used_blocks", jint (st->data_used_blocks));
  add (log, "fill_percent", json_object_new_double (
    100.0 * (double) (st->data_used_blocks > by_slots ? st->data_used_blocks : by_slots)
    / (double) st->data_blocks));
  add (log, "next_seq", jint (st->next_seq));
  add (log, "durable_seq", jint (st->durable_seq));
  add (log, "epoch", jint (st->epoch));
  add (log, "syncs", jint (st->syncs));
  add (log, "header_writes", jint (st->header_writes));
  add (log, "full_waits", jint (st->space_waits));
  add (log, "recovered_entries", jint (r->rec.entries));
  return log;
}

/* ---- sites ------------------------------------------------------------ */

static const char *
site_link_name (struct site *s, enum site_state state)
{
  size_t i, j;
  if (s->id == 0)
    return "local";
  if (site_paused (s))
    return "paused";
  if (site_state_is_disconnected (state))
    return "disconnected";
  for (i = 0; i < s->r->ndevs; i++)
    for (j = 0; j < s->r->devs[i].nlegs; j++) {
      struct leg *l = &s->r->devs[i].legs[j];
      if (l->site == s->id && l->remote && !LOAD (l->link.up))
        return "connecting";
    }
  return "connected";
}

static json_object *
site_resync_json (struct site *s, enum site_state state)
{
  json_object *o = json_object_new_object ();
  uint64_t left = site_dirty_regions (s);
  bool active = site_state_is_resync (state);
  uint64_t copied = LOAD (s->resync.copied);
  uint64_t bytes = LOAD (s->resync.bytes);
  uint64_t zbytes = LOAD (s->resync.zero_bytes);
  double secs = 0, rate = 0, eta = -1;

  if (active) {
    secs = ((double) mono_ns () - (double) s->resync.started_ns) / 1e9;
    if (secs > 0.5 && copied) {
      rate = (double) copied / secs;       /* regions per second */
      eta = (double) left / rate;
    }
  }
  add (o, "active", json_object_new_boolean (active));
  add (o, "regions_total", jint (LOAD (s->resync.regions)));
  add (o, "regions_copied", jint (copied));
  add (o, "regions_left", jint (left));
  add (o, "bytes_copied", jint (bytes));
  add (o, "bytes_zeroed", jint (zbytes));
  add (o, "bytes_per_second", json_object_new_double (
    active && secs > 0.5 ? (double) (bytes + zbytes) / secs : 0));
  add (o, "eta_seconds", json_object_new_double (eta));
  add (o, "rate_limit", jint (s->cfg->resync_rate));
  add (o, "finished", jint (LOAD (s->resync.finished)));
  return o;
}

static json_object *
site_verify_json (struct replicator *r, struct site *s)
{
  struct site_verify *v = &s->verify;
  json_object *o = json_object_new_object ();
  bool active = __atomic_load_n (&v->active, __ATOMIC_ACQUIRE);
  bool ran = LOAD (v->runs) || active;

  add (o, "active", json_object_new_boolean (active));
  add (o, "device", json_object_new_string (ran && v->dev < r->ndevs ? r->devs[v->dev].name : ""));
  add (o, "regions_total", jint (v->total));
  add (o, "regions_checked", jint (LOAD (v->checked)));
  add (o, "regions_differing", jint (LOAD (v->differing)));
  add (o, "regions_busy", jint (LOAD (v->busy)));
  add (o, "mark", json_object_new_boolean (v->mark));
  add (o, "finished", jint (LOAD (v->runs)));
  pthread_mutex_lock (&s->lock);
  add (o, "error", json_object_new_string (active ? "" : v->error));
  pthread_mutex_unlock (&s->lock);
  return o;
}

/* The consistent point, or NULL (under the site's lock). */
static json_object *
site_consistent_point_json (struct site *s)
{
  json_object *cp;

  if (!s->cons.valid || site_in_doubt (s))
    return NULL;
  cp = json_object_new_object ();
  add (cp, "seq", jint (s->cons.seq));
  if (s->cons.time_ns) {
    char tb[40];
    time_t t = (time_t) (s->cons.time_ns / 1000000000u);
    struct tm tm;
    gmtime_r (&t, &tm);
    strftime (tb, sizeof tb, "%Y-%m-%dT%H:%M:%SZ", &tm);
    add (cp, "time", json_object_new_string (tb));
    add (cp, "age_seconds", json_object_new_double ((double) time (NULL) - (double) s->cons.time_ns / 1e9));
  }
  else
    add (cp, "time", NULL);
  return cp;
}

/* Backlog, RPO, fall_behind and whether the site is over it (nothing in
 * dirty-log mode: the site is not fed). */
static void
site_backlog_json (json_object *js, struct site *s, enum site_state state, uint64_t committed)
{
  bool not_fed = site_state_is_dirty_log (state);
  enum cfg_fall_behind fbk = LOAD (s->fall_behind);
  char fb[64];

  add (js, "backlog_entries", jint (not_fed ? 0 : site_backlog_entries (s, committed)));
  add (js, "backlog_bytes", jint (not_fed ? 0 : site_backlog_bytes (s)));
  add (js, "rpo_seconds", json_object_new_double (
    not_fed ? 0 : (double) site_oldest_age_ms (s, committed) / 1000.0));
  cfg_format_fall_behind (fbk, LOAD (s->fall_behind_value), fb, sizeof fb);
  add (js, "fall_behind", jstr (fb));
  add (js, "behind", json_object_new_boolean (
    !not_fed && LOAD (s->fall_behind) != FB_NONE && site_over_threshold (s, committed)));
}

/* The latency budget of a sync site: its sync_deadline (0: none), whether
 * clients wait for it ("sync") or it missed the deadline and has not caught
 * up yet (null for an async site), and the misses. */
static void
site_sync_json (json_object *js, struct site *s)
{
  bool sync = LOAD (s->policy) == POLICY_SYNC;

  add (js, "sync_deadline_ms", jint (s->cfg->sync_deadline_ms));
  add (js, "sync_state", sync ? jstr (site_sync_behind (s) ? "behind (deadline missed)" : "sync") : NULL);
  add (js, "sync_deadline_misses", jint (LOAD (s->sync_misses)));
  add (js, "sync_behind_count", jint (LOAD (s->sync_behind_count)));
}

/* The link: its rate, its measured throughput, and the projected time to
 * send what the site lacks (the log's backlog plus the regions its dirty
 * logs mark, at full size) at the throughput, or at the rate while nothing
 * was measured; null when there is nothing to send, no connection up, or
 * neither figure. */
static void
site_link_json (json_object *js, struct site *s, enum site_state state, const char *link)
{
  bool links = s->id && site_has_links (s);
  uint64_t bps = LOAD (s->link_bytes_per_s), rate = s->cfg->rate, speed = bps ? bps : rate;
  uint64_t todo = (site_state_is_dirty_log (state) ? 0 : site_backlog_bytes (s)) + site_dirty_bytes (s);

  add (js, "rate_limit", jint (rate));
  add (js, "link_bytes_sent", jint (LOAD (s->link_bytes)));
  add (js, "link_bytes_per_second", links ? jint (bps) : NULL);
  add (js, "log_bytes_sent", jint (LOAD (s->log_bytes_sent)));
  add (js, "coalesced_bytes", jint (LOAD (s->coalesced_bytes)));
  add (js, "coalesced_entries", jint (LOAD (s->coalesced_entries)));
  add (js, "coalesced_runs", jint (LOAD (s->coalesced_runs)));
  add (js, "stream", json_object_new_boolean (LOAD (s->stream)));
  add (js, "stream_resumes", jint (LOAD (s->stream_resumes)));
  add (js, "stream_records", jint (LOAD (s->stream_records)));
  add (js, "catchup_seconds", links && todo && speed && !strcmp (link, "connected")
       ? json_object_new_double ((double) todo / (double) speed) : NULL);
}

static json_object *
site_json (struct replicator *r, struct site *s, enum site_state state, uint64_t committed)
{
  const char *link = site_link_name (s, state);
  json_object *js = json_object_new_object ();

  add (js, "id", json_object_new_int ((int) s->id));
  add (js, "policy", jstr (cfg_policy_name (LOAD (s->policy))));
  add (js, "link", jstr (link));
  add (js, "mode", jstr (site_state_mode_name (state)));
  add (js, "applied_seq", jint (replog_applied (r->rl, s->id)));
  pthread_mutex_lock (&s->lock);
  add (js, "consistent_point", site_consistent_point_json (s));
  pthread_mutex_unlock (&s->lock);
  add (js, "done_seq", jint (LOAD (s->done_seq)));
  site_backlog_json (js, s, state, committed);
  site_sync_json (js, s);
  site_link_json (js, s, state, link);
  add (js, "disconnect_timeout_ms", jint (s->cfg->disconnect_timeout_ms));
  add (js, "pull_ahead_ms", jint (s->cfg->pull_ahead_ms));
  add (js, "disconnects", jint (LOAD (s->disconnects)));
  add (js, "resync", site_resync_json (s, state));   /* site 0: restores */
  if (s->id)
    add (js, "verify", site_verify_json (r, s));
  return js;
}

/* ---- devices and legs ------------------------------------------------- */

/* What status shows for a leg, from its own state and its site's. */
static enum leg_state
leg_shown (struct leg *l, enum site_state state, uint64_t last)
{
  struct site *s = &l->dev->r->sites[l->site];
  enum leg_state raw = LOAD (l->state);

  if (l->site == 0)
    return raw;
  if (site_state_is_dirty_log (state))
    return LEG_DIRTY_LOG_MODE;
  if (site_state_is_resync (state))
    return LEG_RESYNCING;
  if (site_state_is_disconnected (state))
    return LEG_DISCONNECTED;
  if (raw == LEG_FAILED)
    return raw;
  if ((LOAD (s->fall_behind) != FB_NONE && site_over_threshold (s, last)) || site_sync_behind (s))
    return LEG_BEHIND;
  return LEG_REPLICATING;
}

/* The keys of a remote site's leg: dirty log, in-doubt regions, sync. */
static void
leg_remote_site_json (json_object *jl, struct leg *l, uint64_t doubt)
{
  add (jl, "region_size", jint (l->cfg->dirty_log.region_size));
  add (jl, "dirty_regions", jint (l->dirty_log ? bitmap_count (l->dirty_log) : 0));
  add (jl, "in_doubt_regions", jint (doubt));
  if (l->dlog) {
    json_object *jdl = json_object_new_object ();
    add (jdl, "path", jstr (dlog_path (l->dlog)));
    add (jdl, "health", jstr (__atomic_load_n (&l->dlog_failed, __ATOMIC_ACQUIRE) ? "failed" : "ok"));
    add (jl, "dirty_log", jdl);
  }
  add (jl, "initial_sync", jstr (LOAD (l->initial_sync) ? "pending" : "done"));
}

/* The keys of a leg on a connection. */
static void
leg_link_json (json_object *jl, struct leg *l)
{
  char err[256];

  /* The leg's own I/O error (set by its worker) first, else the
   * connection's.  Bounded copy: the worker may be rewriting it. */
  snprintf (err, sizeof err, "%.*s", (int) sizeof l->last_error - 1, l->last_error);
  if (!err[0])
    rlink_get_error (&l->link, err, sizeof err);
  add (jl, "link", jstr (LOAD (l->link.up) ? "up" : "down"));
  add (jl, "connects", jint (LOAD (l->link.connects)));
  add (jl, "drops", jint (LOAD (l->link.drops)));
  add (jl, "receiver", json_object_new_boolean (LOAD (l->link.receiver)));
  add (jl, "last_error", jstr (err));
}

/* A leg's label: where, what the last check found, its generation. */
static void
leg_label_json (json_object *jl, struct leg *l)
{
  json_object *jb = json_object_new_object ();
  char gen[17] = "";

  pthread_mutex_lock (&l->lb.lock);
  add (jb, "where", jstr (l->lb.where == LABEL_END ? "end" : l->lb.where == LABEL_FILE ? "file" : "none"));
  add (jb, "state", jstr (leglabel_state (l)));
  add (jb, "refused", json_object_new_boolean (l->lb.refused));
  if (l->lb.have)
    lbl_gen_str (l->lb.cur.gen, gen);
  add (jb, "generation", jstr (gen));
  add (jb, "detail", jstr (l->lb.detail));
  add (jb, "writes", jint (l->lb.writes));
  pthread_mutex_unlock (&l->lb.lock);
  add (jl, "label", jb);
}

static json_object *
leg_json (struct leg *l, enum site_state state, uint64_t committed)
{
  json_object *jl = json_object_new_object ();
  struct bitmap *db = __atomic_load_n (&l->doubt, __ATOMIC_ACQUIRE);
  uint64_t doubt = db ? bitmap_count (db) : 0;
  enum leg_state ls = leg_shown (l, state, committed);

  add (jl, "site", json_object_new_int ((int) l->site));
  add (jl, "path", jstr (l->remote ? l->link.shown : l->cfg->path));
  add (jl, "transport", jstr (l->cfg->transport == TRANSPORT_NBD ? "nbd" :
                              l->cfg->transport == TRANSPORT_ISCSI ? "iscsi" : "path"));
  add (jl, "state", jstr (leg_state_name (ls)));
  add (jl, "consistent", json_object_new_boolean (
    (ls == LEG_REPLICATING || ls == LEG_BEHIND || ls == LEG_DISCONNECTED) && doubt == 0 &&
    !LOAD (l->lb.refused) &&
    !site_in_doubt (&l->dev->r->sites[l->site])));
  add (jl, "errors", jint (LOAD (l->errors)));
  if (l->site == 0)
    add (jl, "direct_io", json_object_new_boolean (l->direct));
  else
    leg_remote_site_json (jl, l, doubt);
  if (l->remote)
    leg_link_json (jl, l);
  leg_label_json (jl, l);
  return jl;
}

static json_object *
device_json (struct vdev *d, const enum site_state *states, uint64_t committed)
{
  json_object *jd = json_object_new_object (), *legs = json_object_new_array ();
  size_t j;

  add (jd, "name", jstr (d->name));
  {
    char u[37];
    lbl_uuid_str (d->r->rec.identity.dev_uuid[d->index], u);
    add (jd, "uuid", jstr (u));
  }
  add (jd, "size", jint (d->size));
  add (jd, "block_size", json_object_new_int ((int) d->block_size));
  add (jd, "max_request", json_object_new_int64 (d->max_request));
  add (jd, "served_from", json_object_new_int ((int) LOAD (d->read_site)));
  add (jd, "local_out", json_object_new_boolean (d->local_out));
  pthread_mutex_lock (&d->ov_lock);
  add (jd, "unapplied_extents", jint (overlay_count (d->ov)));
  pthread_mutex_unlock (&d->ov_lock);
  add (jd, "reads", jint (LOAD (d->counters.reads)));
  add (jd, "writes", jint (LOAD (d->counters.writes)));
  for (j = 0; j < d->nlegs; j++)
    json_object_array_add (legs, leg_json (&d->legs[j], states[d->legs[j].site], committed));
  add (jd, "legs", legs);
  return jd;
}

/* ---- the document ----------------------------------------------------- */

/* The group's identity: UUID, generation and the ones before it. */
static void
identity_json (json_object *root, struct replicator *r)
{
  const struct replog_identity *id = &r->rec.identity;
  json_object *jh = json_object_new_array ();
  char u[37], g[17];
  unsigned i;

  lbl_uuid_str (id->group, u);
  lbl_gen_str (id->gen, g);
  add (root, "group", jstr (u));
  add (root, "generation", jstr (g));
  for (i = 0; i < id->nhist; i++) {
    json_object *e = json_object_new_object ();
    lbl_gen_str (id->hist[i].id, g);
    add (e, "generation", jstr (g));
    add (e, "end_seq", jint (id->hist[i].end_seq));
    add (e, "end_time_ns", jint (id->hist[i].end_time_ns));
    json_object_array_add (jh, e);
  }
  add (root, "history", jh);
}

/* The instance's role: the primary, or read-only after (or during) a
 * switchover (admin.c). */
static void
role_json (json_object *root, struct replicator *r)
{
  enum handover_state hs = __atomic_load_n (&r->handover.state, __ATOMIC_ACQUIRE);
  static const char *const names[] = {
    [HO_NONE] = "primary", [HO_DRAINING] = "switching-over", [HO_LABELLING] = "switching-over",
    [HO_FAILED] = "switchover-failed", [HO_DONE] = "handed-over",
  };
  add (root, "role", jstr (names[hs]));
  add (root, "read_only", json_object_new_boolean (hs != HO_NONE));
  if (hs == HO_DONE || hs == HO_FAILED)
    add (root, "handover_seq", jint (r->handover.seq));
}

json_object *
replicator_status_obj (struct replicator *r)
{
  json_object *root = json_object_new_object ();
  json_object *sites = json_object_new_array ();
  json_object *devs = json_object_new_array ();
  enum site_state states[CFG_MAX_SITES];
  struct replog_stats st;
  size_t i;

  replog_get_stats (r->rl, &st);
  for (i = 0; i < CFG_MAX_SITES; i++)
    states[i] = r->sites[i].cfg ? site_state (&r->sites[i]) : SITE_LOG;
  add (root, "version", jstr (PACKAGE_VERSION));
  add (root, "engine", jstr (r->engine ? r->engine : "stopped"));
  add (root, "started", jint (r->started));
  identity_json (root, r);
  role_json (root, r);
  add (root, "log", log_json (r, &st));
  for (i = 0; i < CFG_MAX_SITES; i++)
    if (r->sites[i].cfg)
      json_object_array_add (sites, site_json (r, &r->sites[i], states[i], st.committed_seq));
  add (root, "sites", sites);
  for (i = 0; i < r->ndevs; i++)
    json_object_array_add (devs, device_json (&r->devs[i], states, st.committed_seq));
  add (root, "devices", devs);
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
