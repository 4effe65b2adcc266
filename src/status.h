/* status.h: the status document (status.c; replctl status, metrics). */
#ifndef REPLICATOR_STATUS_H
#define REPLICATOR_STATUS_H

#include <stdbool.h>

struct replicator;
struct json_object;

/* Status as a JSON document (malloc'd string), or as json-c's object. */
char *replicator_status_json (struct replicator *r, bool pretty);
struct json_object *replicator_status_obj (struct replicator *r);

#endif
