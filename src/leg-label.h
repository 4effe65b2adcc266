/* leg-label.h: the labels of one instance's legs (leg-label.c). */
#ifndef REPLICATOR_LEG_LABEL_H
#define REPLICATOR_LEG_LABEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "label.h"
#include "link.h"
#include "replog.h"

struct leg;
struct vdev;
struct replicator;

/* A path leg (after leg_open_local): where its label lives, the label
 * file opened (and locked), the label read.  0, or -1 (reported). */
int leglabel_open_path (struct leg *l);
void leglabel_close (struct leg *l);
/* Bytes a device of dev_size must leave at the end of leg l for its label
 * (0: a label file, or none). */
uint64_t leglabel_room (const struct leg *l, uint64_t dev_size);
/* The device size the local leg's label records (0: none). */
uint64_t leglabel_dev_size (const struct leg *l);

/* The identity a new log gets (or one written before labels): adopted
 * from the local legs' labels when they have one (a new generation that
 * follows theirs), else new.  id->refuse is set when adopting needs the
 * takeover override.  0, or -1 (reported: local legs disagree). */
int leglabel_propose (struct replicator *r, struct replog_identity *id);
/* Before a new log is opened with identity id (leglabel_propose): the
 * remote sites every leg of which is reachable now and labelled handed
 * over at exactly the end of the generation id follows (a switchover):
 * they start in log mode, nothing copied.  0 unless the local legs are
 * labelled handed over too. */
uint32_t leglabel_handover_sites (struct replicator *r, const struct replog_identity *id);
/* This instance's identity for device d (after the log is open). */
void leglabel_self (const struct vdev *d, struct lbl_self *s);

/* After the log is open: check the labels of d's path legs.  A local leg
 * that is blank or of an older generation while the log knows the device
 * is put out of service (*out_of_service; a restore rebuilds it);
 * anything not ours is refused (-1, reported).  The others are labelled. */
int leglabel_check_path_legs (struct vdev *d, bool *out_of_service);

/* The rlink check hook of a remote leg (opaque: the leg); see rlink.h. */
int leglabel_check_remote (void *opaque, void *conn, const struct link_ops *ops,
                           const struct link_info *info, char *err, size_t errlen);

/* Write l's label now with flags (LBL_*), consistent point cons_seq and
 * its time: a path leg through its fd, a remote one through its reader
 * connection.  0, or -1 (l->lb.detail says why). */
int leglabel_write (struct leg *l, uint32_t flags, uint64_t cons_seq, uint64_t cons_ns);

/* A remote leg's label, read again through its reader connection, is
 * still the one last read or written (false: another disk now, or the
 * label changed; lb.detail says so).  A read error is not an answer
 * (true). */
bool leglabel_still_ours (struct leg *l);

/* A local leg's failback record: bitmap b (the leg's region size: the
 * regions this leg may hold that the site taking over lacks, after
 * since) into the label's bitmap area, made durable, then the label says
 * LBL_BITMAP (and no longer a primary's).  0, or -1 (lb.detail). */
struct bitmap;
int leglabel_write_record (struct leg *l, const struct bitmap *b, uint64_t since);

/* The label thread: remote legs' label writes, posted by their workers
 * (which never wait for a remote's label I/O), one at a time, in the
 * order posted per leg (a newer post replaces one not started).
 * leglabel_post with check reads the label first: one that changed under
 * the running connection sets lb.recheck instead of writing; flags 0 is a
 * check only. */
int leglabel_thread_start (struct replicator *r);
void leglabel_thread_stop (struct replicator *r);
void leglabel_post (struct leg *l, uint32_t flags, uint64_t cons_seq, uint64_t cons_ns, bool check);
/* A posted write not done yet. */
bool leglabel_pending (const struct leg *l);

/* The state for status: "none", "new", "ok", "older", "refused: ...". */
const char *leglabel_state (const struct leg *l);

#endif
