/* admin.h: the administrator's commands (admin.c; the control socket).
 * Each returns 0, or -1 with a one-line reason in why. */
#ifndef REPLICATOR_ADMIN_H
#define REPLICATOR_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

struct replicator;

int replicator_resync (struct replicator *r, const char *device, unsigned site, bool full,
                       char *why, size_t len);
/* Split brain: the changes of site's legs are discarded; they become
 * copies of this primary at their next connection. */
int replicator_discard (struct replicator *r, unsigned site, char *why, size_t len);
int replicator_pause (struct replicator *r, unsigned site, bool pause, char *why, size_t len);
int replicator_set_policy (struct replicator *r, unsigned site, const char *policy,
                           const char *fall_behind, char *why, size_t len);
int replicator_restore (struct replicator *r, const char *device, unsigned site, char *why,
                        size_t len);

/* What a switchover did, per site (index: site id). */
struct switchover_result {
  uint64_t seq;                  /* the last seq: every site holds every entry <= seq */
  struct {
    bool configured;
    uint64_t applied;            /* as the log header records it */
    unsigned legs;               /* legs labelled handed over */
  } sites[CFG_MAX_SITES];
};
/* Planned switchover (replctl switchover): writes fail with EROFS from
 * now on; every site drained within timeout_s; every leg labelled handed
 * over at res->seq; then read-only for good.  -1 with why: before the
 * labels, writes are accepted again; a failed label write leaves the
 * instance read-only (run it again, or restart with takeover=yes). */
int replicator_switchover (struct replicator *r, unsigned timeout_s, struct switchover_result *res,
                           char *why, size_t len);

#endif
