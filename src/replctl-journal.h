/* replctl-journal.h: `replctl journal-replay LEG` (replctl-journal.c). */
#ifndef REPLICATOR_REPLCTL_JOURNAL_H
#define REPLICATOR_REPLCTL_JOURNAL_H

/* args: the command's arguments after its name.  Exit status: 0 replayed
 * or nothing to replay, 1 failed (no journal, superblock invalid, leg
 * unreachable), 2 usage. */
int replctl_journal_replay (int nargs, char **args);

#endif
