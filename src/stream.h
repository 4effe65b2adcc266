/* stream.h: streaming to a receiver (issue 16): the stream record, and the
 * check of a new connection to a receiver (fence, then where to resume).
 *
 * A receiver (receiver=yes) logs a connection's requests in arrival order,
 * so the primary sends epoch after epoch without waiting for each to be
 * flushed there.  After each epoch's entries it writes a stream record: one
 * block at record_off of the leg (the first 4 KiB after the device's data,
 * inside this leg's label area: label=end only, and only with room before
 * the label's bitmap; 512 bytes, or one block of a remote whose smallest
 * write is larger), saying "every entry <= seq of this group, device and
 * generation came before me".  What the receiver holds is a prefix of the
 * stream, so its last record says exactly which epochs it has whole; the
 * entries after that belong to one open epoch, which may be sent again.
 *
 * At each new connection, before the worker has it: a fence (an NBD CACHE
 * request of STREAM_REC_SIZE bytes: it carries no data, so a client's own
 * CACHE taken for one costs a reconnect, never a write; it ends every
 * older connection's changes, so a request of a connection we gave up
 * cannot land later), then the record is read.  The
 * worker resumes after max(record seq, applied).  Byte table in
 * nbd-replicator-replog(5), STREAM RECORD. */
#ifndef REPLICATOR_STREAM_H
#define REPLICATOR_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "link.h"

#define STREAM_MAGIC      "NBDRSTRM"     /* a record */
#define STREAM_REC_SIZE   512u           /* a record (written as one block of the
                                            leg: STREAM_IO_MAX at most, zero-padded) */
#define STREAM_IO_MAX     4096u          /* the largest record write */
#define STREAM_FENCE_LEN  4096u          /* a fence's CACHE length */

struct stream_rec {
  char     magic[8];            /*  0 STREAM_MAGIC */
  uint32_t version;             /*  8 1 */
  uint32_t size;                /* 12 STREAM_REC_SIZE */
  uint8_t  group[16];           /* 16 the group (instance) UUID */
  uint8_t  device[16];          /* 32 the device UUID */
  uint64_t gen;                 /* 48 the generation of the log */
  uint64_t seq;                 /* 56 every entry <= seq came before this record */
  uint64_t time_ns;             /* 64 CLOCK_REALTIME when entry seq was logged (0 unknown) */
  uint64_t written_ns;          /* 72 CLOCK_REALTIME of the send */
  uint8_t  reserved[508 - 80];  /* 80 zero */
  uint32_t crc;                 /* 508 crc32c of bytes 0..507 */
};
_Static_assert (sizeof (struct stream_rec) == STREAM_REC_SIZE, "stream record is 512 bytes");

struct leg;
struct vdev;

/* The size of a record write to a remote whose smallest write is
 * block_size: STREAM_REC_SIZE, or one block (0: too large a block). */
uint32_t stream_io_len (uint32_t block_size);

/* Where the leg's stream record goes for a remote of leg_size bytes: the
 * device's size, if the leg has an end label with room for a record write
 * of io_len bytes before the label's bitmap; 0 if it cannot stream. */
uint64_t stream_record_off (const struct leg *l, uint64_t leg_size, uint32_t io_len);

/* Compose the record for seq (logged at time_ns, CLOCK_REALTIME) into buf
 * (io_len bytes: the record, then zeroes). */
void stream_record (void *buf, uint32_t io_len, const struct vdev *d, uint64_t seq,
                    uint64_t time_ns);

/* The rlink check hook of a remote leg (opaque: the leg): the label check
 * (leglabel_check_remote), then, for a receiver with room for the record,
 * the fence and the record (info->stream, info->stream_seq). */
int stream_check (void *opaque, void *conn, const struct link_ops *ops, struct link_info *info,
                  char *err, size_t errlen);

#endif
