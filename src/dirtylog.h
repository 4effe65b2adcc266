/* dirtylog.h: persistent dirty logs (dirty_log type "disk"), the on-disk
 * copy of a leg's region bitmap.  Format: see the comment in dirtylog.c.
 *
 * Contract of the three dirty-log types (cfg_dirtylog), all built on
 * struct bitmap (one bit per region of the leg, set = the leg may lack
 * that region's newest data):
 *   - core: the bitmap lives in memory only; after a restart every region
 *     of a leg that was not a consistent prefix is marked.
 *   - disk: as core, plus this file.  Bits that protect data (set before
 *     the log releases the entries they stand for, or before the log
 *     header says the site may skip them) are durable in the file before
 *     that happens (dlog_flush, called by the log's syncer); a cleared bit
 *     reaches the file only after the copy it stands for was flushed on
 *     the leg (the worker clears bits after its leg flush).  Written only
 *     when changed, one 4 KiB page at a time, each page checksummed.
 *   - nolog: no record of what is missing: a resync copies everything.
 */
#ifndef REPLICATOR_DIRTYLOG_H
#define REPLICATOR_DIRTYLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bitmap.h"

struct dlog;

/* Identity recorded in the file: a bitmap of another device, leg
 * geometry or site is refused. */
struct dlog_id {
  const char *device;
  uint64_t size;
  uint64_t region_size;
  unsigned site;
};

/* What dlog_open found, for the caller's messages. */
struct dlog_open_info {
  bool created;                  /* no file (or an empty one): created with b's bits */
  bool header_bad;               /* unreadable header: recreated, every bit set */
  uint64_t bad_pages;            /* pages failing their checks: their bits set */
  uint64_t bits_loaded;          /* set bits read from the file */
};

/* Open the dirty log file at path for bitmap b (same geometry as id).
 * A new file gets b's current bits.  An existing one is read: its bits
 * are OR-ed into b; a page that fails its checksum, or is missing
 * (truncated file), has all its bits set; an unreadable header makes the
 * file be recreated with every bit set.  b then tracks its changes.
 * The file is locked exclusively (flock) for as long as it is open: a
 * file another instance holds is refused ("locked by another instance").
 * 0, or -1 with one line in err (a file of another device, leg geometry
 * or site; locked; I/O errors). */
int dlog_open (const char *path, const struct dlog_id *id, struct bitmap *b,
               struct dlog **out, struct dlog_open_info *info, char *err, size_t errlen);
/* Write the changed pages and fdatasync: 0; 1 when that failed but a
 * second attempt, through a new descriptor, rewrote every page written
 * since the file's last good sync and synced them (errno: the first
 * error); -1 (errno set) when that failed too: those pages stay marked
 * changed and the next call reopens the file and writes them again
 * (safety rule 13: a failed sync may have lost any of them). */
int dlog_flush (struct dlog *dl);
/* Forget the file's content after a failure it cannot record: the file is
 * truncated to its header so that the next start marks every region. */
void dlog_invalidate (struct dlog *dl);
const char *dlog_path (const struct dlog *dl);
void dlog_close (struct dlog *dl);

/* Format constants (tests). */
#define DLOG_PAGE_SIZE     4096u
#define DLOG_WORDS_PER_PAGE 511u          /* 4088 bytes of bits, then index and crc */

#endif
