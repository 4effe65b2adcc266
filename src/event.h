/* event.h: state changes.  Each one is logged as one line naming the site,
 * the device if it concerns one, and the reason, at nbdkit's error level
 * when data depends on the log alone (local leg or log failed), with
 * "warning:" when a copy is degraded, as a note when it recovers; and, if the configuration names an on_event hook, the hook
 * is run for it (in order, one at a time, from a thread of its own: never
 * on a client's or a worker's path) with the event in its environment:
 *
 *   NBD_REPLICATOR_EVENT   the name below, e.g. site-disconnected
 *   NBD_REPLICATOR_LEVEL   error, warning or info
 *   NBD_REPLICATOR_SITE    site id, empty if none
 *   NBD_REPLICATOR_DEVICE  device name, empty if none
 *   NBD_REPLICATOR_REASON  the logged text
 *   NBD_REPLICATOR_TIME    unix time of the event (seconds)
 *   NBD_REPLICATOR_CONTROL the control socket (for replctl in the hook)
 */
#ifndef REPLICATOR_EVENT_H
#define REPLICATOR_EVENT_H

#include <stdint.h>

enum rep_event {
  EV_LINK_UP,               /* a leg's connection is up */
  EV_LINK_DOWN,             /* a leg's connection was lost */
  EV_SITE_DISCONNECTED,     /* no progress for disconnect_timeout */
  EV_SITE_BACK,             /* progress again after a disconnection */
  EV_SITE_CAUGHT_UP,        /* a site that came back has applied the log */
  EV_SITE_BEHIND,           /* over its fall_behind threshold: clients wait */
  EV_SITE_WITHIN,           /* back under the threshold */
  EV_SITE_DIRTY,            /* moved to dirty-log mode: needs a resync */
  EV_RESYNC_STARTED,
  EV_RESYNC_FINISHED,
  EV_SITE_PAUSED,
  EV_SITE_RESUMED,
  EV_LOCAL_FAILED,          /* a local leg is out of service */
  EV_LOCAL_BACK,            /* a local leg is back in service */
  EV_RESTORE_STARTED,       /* replctl restore */
  EV_SERVED_FROM,           /* reads of a device come from another site */
  EV_LOG_FAILED,            /* the log could not be made durable: flushes fail */
  EV_VERIFY_FINISHED,
  EV_LEG_REFUSED,           /* a leg's label says it is not ours to write */
  EV_LEG_NEW,               /* a leg without a label: labelled, copied in full */
  EV_LEG_LABELLED,          /* a leg's label changed generation or role */
  EV_SWITCHOVER,            /* replctl switchover: drained and handed over (read-only) */
  EV_SITE_SYNC_BEHIND,      /* a sync site missed its sync_deadline: clients stop waiting */
  EV_SITE_SYNC_BACK,        /* ... and caught up: back to sync */
  EV_COUNT
};

/* Name of an event as the hook sees it. */
const char *event_name (enum rep_event ev);

/* Log one state change (site < 0: none; device NULL: none) and queue it
 * for the hook.  The text says what happened and why. */
void rep_event (enum rep_event ev, int site, const char *device, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

/* The hook (NULL: none) and the control socket it is told about; events
 * are queued from now on.  Idempotent. */
void event_configure (const char *hook, const char *control_socket);
/* Start running the hook for queued events (after nbdkit's fork). */
int event_start (void);
/* Run what is queued for up to timeout_ms, then stop. */
void event_stop (unsigned timeout_ms);

/* Counters for status and metrics. */
uint64_t event_count (enum rep_event ev);
uint64_t event_hook_failures (void);
uint64_t event_dropped (void);

#endif
