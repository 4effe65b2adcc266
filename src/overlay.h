/* overlay.h: the index of log entries not yet applied to the local leg,
 * by device byte range, so that reads see the newest completed write
 * (guarantee 1) without scanning the log.
 *
 * A set of non-overlapping extents [start, end), each naming the entry
 * (seq) that last wrote it and where its bytes are: in the log mapping
 * (data) or nowhere (zeroes).  Inserting an entry covers only what no
 * newer entry covers, whatever order inserts arrive in.  Removing an entry
 * (applied) drops only the pieces still carrying its seq.
 *
 * Not thread-safe: the caller holds the device's overlay lock.
 */
#ifndef REPLICATOR_OVERLAY_H
#define REPLICATOR_OVERLAY_H

#include <stdint.h>

enum ov_kind { OV_DATA, OV_ZERO };

struct ov_piece {
  uint64_t start, end;           /* byte range in the device */
  uint64_t seq;
  enum ov_kind kind;
  const uint8_t *src;            /* OV_DATA: bytes of `start` are at src + (start - eoff) */
  uint64_t eoff;                 /* device offset of the entry's first byte */
};

struct overlay;

struct overlay *overlay_new (void);
void overlay_free (struct overlay *ov);
/* Cover [start, end) with entry seq where no newer entry is.  0 or -1 (ENOMEM). */
int overlay_insert (struct overlay *ov, uint64_t start, uint64_t end, uint64_t seq,
                    enum ov_kind kind, const uint8_t *src);
/* Remove what remains of entry seq within [start, end). */
void overlay_remove (struct overlay *ov, uint64_t start, uint64_t end, uint64_t seq);
/* Call fn for every piece overlapping [start, end), in order of start.
 * Pieces are reported whole (the caller clips). */
void overlay_foreach (struct overlay *ov, uint64_t start, uint64_t end,
                      void (*fn) (const struct ov_piece *p, void *opaque), void *opaque);
/* Number of extents (tests, status). */
uint64_t overlay_count (const struct overlay *ov);

#endif
