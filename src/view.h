/* view.h: the device view (view.c): a device's content as a client reads
 * it, the leg reads go through plus the overlay of entries that leg has
 * not applied.  The client path, the workers (resync source) and verify
 * read through it. */
#ifndef REPLICATOR_VIEW_H
#define REPLICATOR_VIEW_H

#include <stdbool.h>
#include <stdint.h>

struct leg;
struct replicator;
struct vdev;

/* The device named name (NULL or "": the first one), or NULL. */
struct vdev *replicator_find (struct replicator *r, const char *name);
/* The leg of d at site (0, or none there: NULL). */
struct leg *vdev_leg_at (struct vdev *d, unsigned site);

/* The device's content (leg + unapplied entries), without counting it as
 * a client read.  0, or -1 with errno set and the error reported. */
int rdev_read_view (struct vdev *d, void *buf, uint32_t count, uint64_t offset);
/* The first half of a device-view read done with an asynchronous read of
 * the local leg: what the unapplied entries hold over [off, off + count)
 * is copied into buf now, and the ranges to take from the local leg (read
 * after this call) are returned in gaps.  -1: more than max gaps (E2BIG),
 * or the local leg is out of service (ENODEV). */
int rdev_view_overlay (struct vdev *d, void *buf, uint32_t count, uint64_t offset,
                       uint64_t (*gaps)[2], unsigned max, unsigned *n);
/* Where [off, off + len) stops being a hole of the device (no unapplied
 * entry, no data on the leg reads go through): off when it starts with
 * data. */
uint64_t rdev_hole_end (struct vdev *d, uint64_t off, uint64_t len);

/* Make (under d->ov_lock) the read index hold exactly the entries of d
 * after seq `after` that are not on a leg yet (on_leg(opaque, seq): one
 * applied out of order): what a leg that applied them lacks. */
int vdev_overlay_reset (struct vdev *d, uint64_t after, bool (*on_leg) (void *, uint64_t),
                        void *opaque);
/* A remote site that can be d's read site (its leg is a consistent prefix
 * and fed from the log), the most up to date; 0 if none. */
unsigned vdev_pick_read_site (struct vdev *d);

/* Write generations (for verify): a logged entry touched [off, off + len)
 * (the client path, after the entry is in the overlay and before it is
 * committed); the sum of d's generations over [off, off + len). */
void vdev_wgen_bump (struct vdev *d, uint64_t off, uint64_t len);
uint64_t vdev_wgen (struct vdev *d, uint64_t off, uint64_t len);

#endif
