/* site.h: the site state machine and the policies' waits (site.c).  The
 * table of states is at the top of site.c. */
#ifndef REPLICATOR_SITE_H
#define REPLICATOR_SITE_H

#include <stdbool.h>
#include <stdint.h>

struct replicator;
struct site;

/* A site's state: its mode (fed from the log, copying its dirty logs, or
 * in dirty-log mode) and its link's health.  Site 0 is in SITE_LOG, or in
 * SITE_RESYNC while a local leg is restored. */
enum site_state {
  SITE_LOG,                      /* fed from the log, link healthy */
  SITE_LOG_CATCHING_UP,          /* fed, back after a disconnection */
  SITE_LOG_DISCONNECTED,         /* no progress for disconnect_timeout */
  SITE_RESYNC,                   /* fed again, copying its dirty logs */
  SITE_RESYNC_CATCHING_UP,
  SITE_RESYNC_DISCONNECTED,
  SITE_DIRTY_LOG,                /* not fed: misses go to its dirty logs */
  SITE_DIRTY_LOG_DISCONNECTED,   /* ... and it was disconnected */
};

/* The site's state now (the one decoder of the state fields). */
enum site_state site_state (struct site *s);
/* The mode as status shows it: "log", "resync" or "dirty". */
const char *site_state_mode_name (enum site_state st);
bool site_state_is_dirty_log (enum site_state st);     /* not fed from the log */
bool site_state_is_resync (enum site_state st);
bool site_state_is_disconnected (enum site_state st);
bool site_state_is_catching_up (enum site_state st);   /* back, not caught up yet */
/* Clients may wait for the site (a sync policy, or over fall_behind). */
bool site_state_holds_clients (enum site_state st);
/* The orthogonal flags. */
bool site_paused (struct site *s);
bool site_in_doubt (struct site *s);

/* Transitions (each takes s->lock and wakes the waiters, unless named
 * _locked: then the caller holds s->lock and broadcasts s->cv). */
/* At construction: the state the log header gives (restart). */
void site_start_mode (struct replicator *r, struct site *s);
/* Fed -> *_DISCONNECTED (counted in disconnects). */
void site_link_lost (struct site *s);
/* Unreachable at start: *_DISCONNECTED, not counted (the worker starting). */
void site_unreachable_at_start (struct site *s);
/* *_DISCONNECTED -> *_CATCHING_UP. */
void site_link_back (struct site *s);
/* *_CATCHING_UP -> SITE_LOG or SITE_RESYNC. */
void site_caught_up (struct site *s);
/* Any -> SITE_DIRTY_LOG(_DISCONNECTED); moves legs_gen; true if a resync
 * was under way (it is abandoned). */
bool site_enter_dirty_log_locked (struct site *s);
/* Any -> SITE_RESYNC; moves legs_gen; the consistent point is dropped. */
void site_enter_resync_locked (struct site *s);
/* SITE_RESYNC* -> SITE_LOG*; the writes in doubt are copied too. */
void site_resync_done_locked (struct site *s);
/* Writes of an aborted connection may land late (in_doubt). */
void site_mark_in_doubt (struct site *s);
/* The administrator's pause: returns the flag as it was. */
bool site_set_paused (struct site *s, bool pause);

/* The policies, client side: wait until the site's legs hold entry seq
 * (sync), or only while the site is over its fall_behind threshold
 * (fall_behind = true); never past the site's disconnect_timeout, nor for
 * a site whose state does not hold clients.  A sync wait on a site with a
 * sync_deadline ends at logged_ns (mono_ns when the request's entries were
 * in the log) + sync_deadline: a miss puts the site behind. */
int site_wait_done (struct site *s, uint64_t seq, bool fall_behind, uint64_t logged_ns);
/* The latency budget: the site missed its sync_deadline and has not
 * caught up yet (clients treat it as async meanwhile). */
bool site_sync_behind (struct site *s);
/* The moment (mono_ns) a sync wait for the site ends, for a request logged
 * at logged_ns; 0 without a budget (no sync_deadline, site 0, or a
 * fall_behind wait). */
uint64_t site_sync_deadline_ns (struct site *s, bool fall_behind, uint64_t logged_ns);
/* A request missed the deadline before its wait for the site began (the
 * log was not durable by then: the site cannot have it): counted, and the
 * site is behind. */
void site_sync_missed (struct site *s, uint64_t seq);
/* The site's worker, each round: a site behind its sync_deadline is back
 * to sync once it has applied every entry the log has made durable
 * (durable), or at once if its policy is no longer sync. */
void site_sync_check (struct site *s, uint64_t durable);
/* Backlog of a site as seen by a writer whose newest entry is last. */
uint64_t site_backlog_entries (struct site *s, uint64_t last);
uint64_t site_backlog_bytes (struct site *s);
uint64_t site_oldest_age_ms (struct site *s, uint64_t last);
bool site_over_threshold (struct site *s, uint64_t last);
/* Regions the site's legs still miss (their dirty logs). */
uint64_t site_dirty_regions (struct site *s);
/* ... in bytes, at most: every region at its full size (a hole among them
 * goes as a write-zeroes, at the cost of a request header). */
uint64_t site_dirty_bytes (struct site *s);
/* The site has connections (NBD or iSCSI legs): a link with a rate and a
 * measured throughput. */
bool site_has_links (struct site *s);

#endif
