/* admin.h: the administrator's commands (admin.c; the control socket).
 * Each returns 0, or -1 with a one-line reason in why. */
#ifndef REPLICATOR_ADMIN_H
#define REPLICATOR_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
