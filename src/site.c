/* site.c: the site state machine, and the policies' waits (layer 3).
 *
 * Owns: a site's state (enum site_state, decoded by site_state () alone)
 * and its transitions; the state a site starts in (from the log header);
 * the client side of the policies (site_wait_done), the latency budget of
 * sync sites (sync_deadline: site_sync_behind, site_sync_check) and the
 * fall_behind measures.  Calls down only: the log (replog), bitmaps,
 * reports, events.
 *
 * The state lives in the fields disconnected, catching_up,
 * dirty_log_mode and resyncing of struct site: only the transitions below
 * write them (and site_start_mode, before the workers run).  Changed under
 * s->lock, with a broadcast of s->cv (clients re-check); read anywhere
 * with atomic loads.
 *
 * state                entered by                        left by
 * ------------------   -------------------------------   ---------------------------------
 * LOG                  start (log header: log mode, a    link lost -> LOG_DISCONNECTED;
 *                      consistent prefix); caught up;    pull-ahead -> DIRTY_LOG; a resync
 *                      resync done                       (in place, or a restore at site
 *                                                        0) -> RESYNC
 * LOG_CATCHING_UP      link back                         caught up -> LOG; link lost;
 *                                                        pull-ahead; a resync
 * LOG_DISCONNECTED     link lost (no progress for        link back -> LOG_CATCHING_UP;
 *                      disconnect_timeout), paused by    pull-ahead (the log full) ->
 *                      the administrator, unreachable    DIRTY_LOG_DISCONNECTED; a resync
 *                      at start
 * RESYNC(_CATCHING_UP, resync started (from dirty-log    resync done -> LOG(_...) with
 *  _DISCONNECTED)      mode, or in place; carried on     in_doubt cleared; pull-ahead ->
 *                      at start from the log header);    DIRTY_LOG (with a backoff); link
 *                      link lost / back as for LOG       lost / back as for LOG
 * DIRTY_LOG            start (header: dirty-log mode,    resync started (links all up,
 *                      writes in doubt, a new site);     after the retry delay) -> RESYNC
 *                      pull-ahead (the log kept full
 *                      for longer than pull_ahead)
 * DIRTY_LOG_           pull-ahead while disconnected;    resync started -> RESYNC
 *  DISCONNECTED        paused or unreachable at start
 *                      in dirty-log mode
 *
 * What clients wait for (site_wait_done, client.c's policies), remote
 * sites, never past disconnect_timeout:
 *   LOG, RESYNC                   sync: until the legs hold the entry (with
 *                                 a sync_deadline: at most that long after
 *                                 the request was logged; a miss sets
 *                                 sync_behind); sync with sync_behind, and
 *                                 async: while over fall_behind
 *   LOG_/RESYNC_CATCHING_UP       async over fall_behind only (the backlog of
 *                                 the disconnection is not the sync
 *                                 clients' to wait for)
 *   *_DISCONNECTED, DIRTY_LOG*    nothing
 *   Site 0 (LOG, or RESYNC while restoring) holds sync clients always.
 *
 * What status shows (status.c):
 *   "mode"     log (LOG*), resync (RESYNC*), dirty (DIRTY_LOG*)
 *   "link"     paused (flag), disconnected (*_DISCONNECTED), connecting (a
 *              remote leg's link is down), connected
 *   legs       dirty (DIRTY_LOG*), resyncing (RESYNC*), disconnected
 *              (LOG_DISCONNECTED), else the leg's own state (failed), behind
 *              (over fall_behind, or sync_behind), replicating; "consistent"
 *              only for replicating, behind and disconnected legs with
 *              nothing in doubt
 *   backlog, rpo and "behind" are 0 / false in DIRTY_LOG*.
 *   "sync_state" sync, or "behind (deadline missed)" (sync_behind); null
 *              for an async site
 *
 * Orthogonal flags (not states):
 *   in_doubt  writes of an aborted connection may still land: set in any fed
 *             state (worker-remote.c, link_down), kept through dirty-log mode (the
 *             regions go into the dirty logs) and cleared only when a resync
 *             ends.  It qualifies the legs' content, not the feeding or the
 *             link, so every state above occurs with and without it.
 *   paused    the administrator's: the worker stops feeding the site and
 *             declares it disconnected, but the flag stays set whatever the
 *             state becomes (a paused site may be pulled ahead), until resume.
 *   sync_behind  a sync site with a sync_deadline missed it (a client's wait
 *             reached it: the write was acknowledged from the log alone):
 *             clients treat the site as async (fall_behind included) until
 *             it has applied every entry the log has made durable
 *             (site_sync_check, from its worker's loop, which also clears it
 *             once the policy is async).  Set by a client, in any state
 *             that holds sync clients; it stays through the other states
 *             (a disconnection, dirty-log mode) until that catch-up.  One
 *             event when set (site-sync-behind), one when cleared
 *             (site-sync-back).
 * catching_up has no effect in dirty-log mode (the watchdog does not run
 * there, and a resync clears it): DIRTY_LOG decodes it away.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <time.h>

#include "event.h"
#include "replicator.h"
#include "report.h"
#include "units.h"

/* ---- the state -------------------------------------------------------- */

#define LOAD(x) __atomic_load_n (&(x), __ATOMIC_RELAXED)

enum site_state
site_state (struct site *s)
{
  bool disc = LOAD (s->disconnected);

  if (LOAD (s->dirty_log_mode))
    return disc ? SITE_DIRTY_LOG_DISCONNECTED : SITE_DIRTY_LOG;
  if (LOAD (s->resyncing))
    return disc ? SITE_RESYNC_DISCONNECTED :
      LOAD (s->catching_up) ? SITE_RESYNC_CATCHING_UP : SITE_RESYNC;
  return disc ? SITE_LOG_DISCONNECTED : LOAD (s->catching_up) ? SITE_LOG_CATCHING_UP : SITE_LOG;
}

bool
site_state_is_dirty_log (enum site_state st)
{
  return st == SITE_DIRTY_LOG || st == SITE_DIRTY_LOG_DISCONNECTED;
}

bool
site_state_is_resync (enum site_state st)
{
  return st == SITE_RESYNC || st == SITE_RESYNC_CATCHING_UP || st == SITE_RESYNC_DISCONNECTED;
}

bool
site_state_is_disconnected (enum site_state st)
{
  return st == SITE_LOG_DISCONNECTED || st == SITE_RESYNC_DISCONNECTED ||
    st == SITE_DIRTY_LOG_DISCONNECTED;
}

bool
site_state_is_catching_up (enum site_state st)
{
  return st == SITE_LOG_CATCHING_UP || st == SITE_RESYNC_CATCHING_UP;
}

bool
site_state_holds_clients (enum site_state st)
{
  return !site_state_is_dirty_log (st) && !site_state_is_disconnected (st);
}

const char *
site_state_mode_name (enum site_state st)
{
  return site_state_is_dirty_log (st) ? "dirty" : site_state_is_resync (st) ? "resync" : "log";
}

bool
site_paused (struct site *s)
{
  return __atomic_load_n (&s->paused, __ATOMIC_ACQUIRE);
}

bool
site_in_doubt (struct site *s)
{
  return LOAD (s->in_doubt);
}

/* ---- transitions ------------------------------------------------------ */

#define STORE(x, v) __atomic_store_n (&(x), (v), __ATOMIC_RELAXED)

void
site_link_lost (struct site *s)
{
  pthread_mutex_lock (&s->lock);
  STORE (s->disconnected, true);
  __atomic_add_fetch (&s->disconnects, 1, __ATOMIC_RELAXED);
  STORE (s->catching_up, false);
  pthread_cond_broadcast (&s->cv);
  pthread_mutex_unlock (&s->lock);
}

void
site_unreachable_at_start (struct site *s)
{
  s->disconnected = true;                /* before its worker thread runs */
}

void
site_link_back (struct site *s)
{
  pthread_mutex_lock (&s->lock);
  STORE (s->disconnected, false);
  STORE (s->catching_up, true);
  pthread_mutex_unlock (&s->lock);
}

void
site_caught_up (struct site *s)
{
  pthread_mutex_lock (&s->lock);
  STORE (s->catching_up, false);
  pthread_mutex_unlock (&s->lock);
}

bool
site_enter_dirty_log_locked (struct site *s)
{
  bool was_resyncing = s->resyncing;

  STORE (s->dirty_log_mode, true);
  __atomic_add_fetch (&s->legs_gen, 1, __ATOMIC_ACQ_REL);
  if (was_resyncing)
    STORE (s->resyncing, false);
  return was_resyncing;
}

void
site_enter_resync_locked (struct site *s)
{
  STORE (s->dirty_log_mode, false);
  STORE (s->disconnected, false);
  STORE (s->catching_up, false);
  STORE (s->resyncing, true);
  __atomic_add_fetch (&s->legs_gen, 1, __ATOMIC_ACQ_REL);
  s->cons.valid = false;                 /* copies make it a mix of states */
}

void
site_resync_done_locked (struct site *s)
{
  STORE (s->resyncing, false);
  STORE (s->in_doubt, false);            /* status reads these */
}

void
site_mark_in_doubt (struct site *s)
{
  STORE (s->in_doubt, true);
}

bool
site_set_paused (struct site *s, bool pause)
{
  return __atomic_exchange_n (&s->paused, pause, __ATOMIC_ACQ_REL);
}

/* ---- the state at start (from the log header) ------------------------- */

/* Every region of the site's legs is marked. */
static void
site_mark_all (struct replicator *r, struct site *s)
{
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++)
      if (r->devs[i].legs[j].site == s->id)
        bitmap_set_all (r->devs[i].legs[j].dirty_log);
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
      bitmap_set_all (l->dirty_log);
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
        bitmap_clear_bits (l->dirty_log, 0, l->dirty_log->nbits);
    }
}

/* In log mode at the last stop: true if the site stays there (a
 * consistent prefix, or a resync to carry on); false if writes were in
 * doubt (it moves to dirty-log mode, in_doubt set). */
static bool
site_start_in_log_mode (struct replicator *r, struct site *s)
{
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
    return true;
  }
  if (!(f & RL_SITE_IN_DOUBT)) {
    site_clear_dirty_logs (r, s);      /* a consistent prefix: nothing is missing */
    return true;
  }
  /* Which regions were in doubt was known only in memory. */
  rep_warn ("site %u: writes were in doubt there before the restart (a connection was "
            "aborted with writes in flight); moving it to dirty-log mode", s->id);
  replog_set_site_dirty (r->rl, s->id);
  s->in_doubt = true;
  return false;
}

/* In dirty-log mode from the start: what its legs miss, and why. */
static void
site_start_in_dirty_log_mode (struct replicator *r, struct site *s)
{
  bool is_new = r->rec.new_sites & (1u << s->id);
  unsigned kept = 0;
  size_t i, j;

  /* A new log that follows another generation (takeover, switchover, a
   * primary on a new log): what its sites lack is what this generation
   * writes, recorded from its first entry on; their legs' labels say at
   * connect what else to copy (leg-label.c: nothing, a failback record,
   * or everything). */
  if (is_new && r->rec.identity_new && r->rec.identity.nhist) {
    s->dirty_log_mode = true;
    for (i = 0; i < r->ndevs; i++)
      for (j = 0; j < r->devs[i].nlegs; j++)
        if (r->devs[i].legs[j].site == s->id)
          r->devs[i].legs[j].state = LEG_DIRTY_LOG_MODE;
    rep_info ("site %u: new in this generation's log: its legs lack what it writes from now "
              "on; their labels say at connect what else they need", s->id);
    return;
  }

  s->dirty_log_mode = true;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      struct leg *l = &r->devs[i].legs[j];
      if (l->site != s->id)
        continue;
      l->state = LEG_DIRTY_LOG_MODE;
      l->initial_sync = is_new;
    }
  if (is_new || s->in_doubt)
    site_mark_all (r, s);              /* initial sync; in-doubt regions are not on disk */
  else
    kept = site_keep_dirty_logs (r, s);
  if (s->in_doubt)
    ;                            /* said before */
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
}

void
site_start_mode (struct replicator *r, struct site *s)
{
  if (replog_site_flags (r->rl, s->id) & RL_SITE_DLOG_LOST)
    /* Dropped by the first header write, after the dirty logs were
     * synced with what this start marks (all, or nothing for a site that
     * is a consistent prefix); set again there if they still fail. */
    (void) replog_change_site_flags (r->rl, s->id, 0, RL_SITE_DLOG_LOST);

  if (replog_site_mode (r->rl, s->id) == RL_MODE_LOG) {
    if (site_start_in_log_mode (r, s))
      return;
  }
  else if (replog_site_flags (r->rl, s->id) & RL_SITE_IN_DOUBT) {
    rep_warn ("site %u: in dirty-log mode with writes in doubt before the restart (a connection "
              "was aborted with writes in flight): every region is marked", s->id);
    s->in_doubt = true;
  }
  site_start_in_dirty_log_mode (r, s);
}

/* ---- the policies ----------------------------------------------------- */

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
  uint64_t now, t;

  if (last <= done || !s->r->rl)
    return 0;
  d = replog_desc (s->r->rl, done + 1);
  t = __atomic_load_n (&d->time_ns, __ATOMIC_RELAXED);
  if (t == 0)
    return 0;                    /* being reserved right now: it is new */
  now = wall_ns ();
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

/* ---- the latency budget (sync_deadline) ------------------------------- */

bool
site_sync_behind (struct site *s)
{
  return __atomic_load_n (&s->sync_behind, __ATOMIC_ACQUIRE);
}

/* A sync client's wait hit the deadline (under s->lock): counted; true if
 * the site went behind now (the caller logs the event, after the lock).
 * The other sync waiters are woken: they stop waiting too. */
static bool
sync_missed_locked (struct site *s)
{
  __atomic_add_fetch (&s->sync_misses, 1, __ATOMIC_RELAXED);
  if (s->sync_behind)
    return false;
  s->sync_behind_since_ns = mono_ns ();
  __atomic_add_fetch (&s->sync_behind_count, 1, __ATOMIC_RELAXED);
  __atomic_store_n (&s->sync_behind, true, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&s->cv);
  return true;
}

static void
sync_behind_event (struct site *s, uint64_t seq)
{
  rep_event (EV_SITE_SYNC_BEHIND, (int) s->id, NULL, "missed its sync_deadline (%" PRIu64 " ms "
             "after a write was logged, %" PRIu64 " entries behind): writes are acknowledged "
             "without it (they are in the log) and clients no longer wait for it until it has "
             "caught up", s->cfg->sync_deadline_ms, site_backlog_entries (s, seq));
}

uint64_t
site_sync_deadline_ns (struct site *s, bool fall_behind, uint64_t logged_ns)
{
  uint64_t ms = s->cfg->sync_deadline_ms;
  return s->id && !fall_behind && ms ? logged_ns + ms * 1000000u : 0;
}

void
site_sync_missed (struct site *s, uint64_t seq)
{
  bool went_behind;

  pthread_mutex_lock (&s->lock);
  went_behind = sync_missed_locked (s);
  pthread_mutex_unlock (&s->lock);
  if (went_behind)
    sync_behind_event (s, seq);
}

void
site_sync_check (struct site *s, uint64_t durable)
{
  bool sync, back;
  uint64_t done, ms = 0;

  if (!site_sync_behind (s))
    return;
  pthread_mutex_lock (&s->lock);
  sync = LOAD (s->policy) == POLICY_SYNC;
  done = s->done_seq;
  back = s->sync_behind && (!sync || done >= durable);
  if (back) {
    ms = (mono_ns () - s->sync_behind_since_ns) / 1000000u;
    __atomic_store_n (&s->sync_behind, false, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&s->lock);
  if (!back)
    return;
  if (sync)
    rep_event (EV_SITE_SYNC_BACK, (int) s->id, NULL, "caught up with the log (seq %" PRIu64 "): "
               "back to sync, clients wait for it again (at most sync_deadline %" PRIu64 " ms); "
               "it was behind for %" PRIu64 " ms", done, s->cfg->sync_deadline_ms, ms);
  else
    rep_event (EV_SITE_SYNC_BACK, (int) s->id, NULL, "no longer behind its sync_deadline: its "
               "policy is now async (it was behind for %" PRIu64 " ms)", ms);
}

/* ---- the waits -------------------------------------------------------- */

int
site_wait_done (struct site *s, uint64_t seq, bool fall_behind, uint64_t logged_ns)
{
  struct replicator *r = s->r;
  struct timespec until;
  bool remote = s->id != 0, went_behind = false;
  /* A sync wait with a latency budget ends at the deadline, counted from
   * when the request was logged; cfg.c keeps it under disconnect_timeout,
   * which bounds every other wait. */
  uint64_t budget = site_sync_deadline_ns (s, fall_behind, logged_ns);

  until = budget ? deadline_ts (budget, 0)
    : deadline_ts (mono_ns (), s->cfg->disconnect_timeout_ms);
  pthread_mutex_lock (&s->lock);
  s->sync_waiters++;
  while (s->done_seq < seq && s->running && !__atomic_load_n (&r->stop, __ATOMIC_ACQUIRE)) {
    enum site_state st = site_state (s);
    if (remote && (!site_state_holds_clients (st) || (!fall_behind && site_state_is_catching_up (st))))
      break;
    if (fall_behind && !site_over_threshold (s, seq))
      break;
    if (budget && s->sync_behind)
      break;                     /* another client's wait missed the deadline */
    if (!remote)
      pthread_cond_wait (&s->cv, &s->lock);
    else if (pthread_cond_timedwait (&s->cv, &s->lock, &until) == ETIMEDOUT) {
      /* Past the deadline: acknowledged without the site (the write is
       * in the log); without one, the worker declares it disconnected. */
      if (budget && s->done_seq < seq)
        went_behind = sync_missed_locked (s);
      break;
    }
  }
  s->sync_waiters--;
  pthread_mutex_unlock (&s->lock);
  if (went_behind)
    sync_behind_event (s, seq);
  return 0;
}

/* What the site's legs have marked in their dirty logs: regions, or
 * bytes (a leg's count capped at its device's size: the last region may
 * be partial). */
static uint64_t
site_dirty_count (struct site *s, bool bytes)
{
  struct replicator *r = s->r;
  uint64_t n = 0;
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++) {
      const struct leg *l = &r->devs[i].legs[j];
      uint64_t c;
      if (l->site != s->id || !l->dirty_log)
        continue;
      c = bitmap_count (l->dirty_log);
      if (bytes) {
        c *= l->dirty_log->region_size;
        c = c < r->devs[i].size ? c : r->devs[i].size;
      }
      n += c;
    }
  return n;
}

uint64_t
site_dirty_regions (struct site *s)
{
  return site_dirty_count (s, false);
}

uint64_t
site_dirty_bytes (struct site *s)
{
  return site_dirty_count (s, true);
}

bool
site_has_links (struct site *s)
{
  struct replicator *r = s->r;
  size_t i, j;
  for (i = 0; i < r->ndevs; i++)
    for (j = 0; j < r->devs[i].nlegs; j++)
      if (r->devs[i].legs[j].site == s->id && r->devs[i].legs[j].remote)
        return true;
  return false;
}
