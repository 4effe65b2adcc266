/* control.h: the control socket of a running instance (replctl talks to it).
 *
 * Protocol: the client connects, sends one command line (at most 4096
 * bytes, ending in \n) and reads one JSON document, then the server closes.
 *   status            -> the status document (replicator_status_json)
 *   anything else     -> {"error": "..."} naming the problem
 * The socket is created mode 0600 (0660 with a group).
 */
#ifndef REPLICATOR_CONTROL_H
#define REPLICATOR_CONTROL_H

struct replicator;
struct control;

/* Listen on path (before nbdkit forks: the socket exists once the server
 * is ready, and connections queue until control_run); NULL on error
 * (reported). */
struct control *control_open (struct replicator *r, const char *path, const char *group);
/* Start answering (after the fork). */
int control_run (struct control *c);
void control_stop (struct control *c);
/* Answer one command line (malloc'd JSON).  Exposed for tests. */
char *control_handle (struct replicator *r, const char *line);

#endif
