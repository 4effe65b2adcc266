/* client.h: the client I/O path (client.c): what the plugin calls for
 * each NBD request.  0 or -1 with errno set and the error reported. */
#ifndef REPLICATOR_CLIENT_H
#define REPLICATOR_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

struct replicator;
struct vdev;

int rdev_pread (struct vdev *d, void *buf, uint32_t count, uint64_t offset);
int rdev_pwrite (struct vdev *d, const void *buf, uint32_t count, uint64_t offset, bool fua);
int rdev_zero (struct vdev *d, uint32_t count, uint64_t offset, bool may_trim, bool fua);
int rdev_trim (struct vdev *d, uint32_t count, uint64_t offset, bool fua);
int rdev_flush (struct replicator *r);

#endif
