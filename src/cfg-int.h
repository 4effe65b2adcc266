/* cfg-int.h: the configuration's internals, shared by its two files and
 * by nothing else.
 *
 *   cfg.c        the libconfig file, the defaults, the validation both
 *                forms go through, the public helpers of cfg.h;
 *   cfg-short.c  the nbdkit short form (key=value), turned into the same
 *                struct cfg.
 *
 * Calls go one way: cfg-short.c calls the functions below (defined in
 * cfg.c) and cfg.h's; cfg.c calls nothing of cfg-short.c.
 */
#ifndef REPLICATOR_CFG_INT_H
#define REPLICATOR_CFG_INT_H

#include "cfg.h"

#define MAX_QUEUE_DEPTH         1024

/* ---- defined in cfg.c, called by cfg-short.c ---- */

/* strdup that reports a failure; NULL for NULL. */
char *cfg_xstrdup (const char *s);
/* Name to enum; -1 for an unknown name (the caller reports where). */
int cfg_policy_of (const char *v, enum cfg_policy *p);
int cfg_log_mode_of (const char *v, enum cfg_log_mode *m);
/* Defaults of a site, of a leg's dirty log, of a new configuration
 * (NULL if out of memory, reported). */
void cfg_site_defaults (struct cfg_site *s, unsigned id);
void cfg_dirty_log_defaults (struct cfg_dirty_log *d);
struct cfg *cfg_new (const char *source);
/* The checks both forms go through, and the values they imply (site 0,
 * pull_ahead, request_timeout, the control socket).  0, or -1 with one
 * error naming the source, line and key. */
int cfg_validate (struct cfg *c);

#endif
