/* failback.h: the failback record of a primary that was failed over
 * (failback.c). */
#ifndef REPLICATOR_FAILBACK_H
#define REPLICATOR_FAILBACK_H

struct replicator;

/* Record on every local leg what it may hold that the site which took
 * over lacks, and label it a copy.  0, or -1 (reported). */
int failback_record (struct replicator *r);

#endif
