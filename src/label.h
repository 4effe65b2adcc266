/* label.h: leg labels (safety rule 15): what a copy is, written on the copy
 * itself so that it travels with the disk.
 *
 * A label is one 4 KiB record, kept in two checksummed copies (A and B,
 * alternating by write counter, as the log header).  It lives:
 *   - "end" (the default): in the last 8 KiB of the leg, copy A at
 *     leg_size - 8192, copy B at leg_size - 4096; below it, the label's
 *     region bitmap; the area (label + bitmap, a multiple of 1 MiB) is not
 *     part of the device, whose size is at most leg_size - area;
 *   - an external label file (a site-0 leg that keeps its full size):
 *     copy A at 0, copy B at 4096, the bitmap from 8192;
 *   - "none": no label (the behaviour before labels).
 * The byte table is in nbd-replicator-replog(5) and below; every offset is
 * pinned by a _Static_assert.  All integers little-endian.
 *
 * Identity: group (the instance's consistency group) and device UUIDs,
 * and generations: a random 64-bit id, new at each takeover (promotion of
 * a copy that was not the primary's), with a short history of the
 * generations before it (newest first), each with the seq and time where
 * it ended.  Comparing a leg's label with this instance's identity says
 * what the leg is (enum lbl_class).
 */
#ifndef REPLICATOR_LABEL_H
#define REPLICATOR_LABEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LBL_MAGIC       "NBDRLABL"     /* 8 bytes, no NUL stored */
#define LBL_VERSION     1
#define LBL_SIZE        4096           /* one copy */
#define LBL_COPIES      8192           /* both copies */
#define LBL_HIST        8              /* generations kept in the history */
#define LBL_AREA_ALIGN  (1u << 20)     /* the end area is a multiple of 1 MiB */
#define LBL_NAME_LEN    64

/* Flags. */
#define LBL_PRIMARY     1u    /* a leg of the primary (site 0 of the writer) */
#define LBL_CONSISTENT  2u    /* the leg holds the group's state after cons_seq */
#define LBL_CLEAN       4u    /* the writer stopped cleanly with this leg drained */
#define LBL_RESYNC      8u    /* a copy onto this leg is under way: mixed states */
#define LBL_BITMAP     16u    /* the bitmap is a failback record: the regions this
                                 leg holds that generation bitmap_gen lacks after
                                 bitmap_since_seq */
#define LBL_HANDOVER   32u    /* planned switchover: the writer drained every site
                                 up to cons_seq and stepped down */
#define LBL_NEW        64u    /* labelled as a new leg: never fully copied yet */

struct lbl_gen {
  uint64_t id;                 /* the generation (never 0) */
  uint64_t end_seq;            /* last seq of that generation's log it ended at */
  uint64_t end_time_ns;        /* CLOCK_REALTIME */
};

/* One copy, on disk. */
struct label {
  char     magic[8];           /*   0 "NBDRLABL" */
  uint32_t version;            /*   8 LBL_VERSION */
  uint32_t size;               /*  12 LBL_SIZE */
  uint64_t counter;            /*  16 +1 per write; copy = counter & 1 (0 = A) */
  uint8_t  group[16];          /*  24 the group (instance) UUID */
  uint8_t  device[16];         /*  40 the device UUID */
  char     name[LBL_NAME_LEN]; /*  56 device name, NUL-padded */
  uint64_t dev_size;           /* 120 device size in bytes */
  uint64_t area_size;          /* 128 bytes at the leg's end taken by label and
                                       bitmap (0: external label file) */
  uint64_t bitmap_offset;      /* 136 from the start of the leg (or label file) */
  uint64_t bitmap_bytes;       /* 144 room for the bitmap (a multiple of 4096) */
  uint32_t region_size;        /* 152 bytes per bitmap bit */
  uint32_t site;               /* 156 the leg's site id in the writer's configuration */
  uint32_t flags;              /* 160 LBL_* */
  uint32_t nhist;              /* 164 entries used in hist (<= LBL_HIST) */
  uint64_t gen;                /* 168 current generation (never 0) */
  uint64_t gen_start_ns;       /* 176 CLOCK_REALTIME it started */
  uint64_t cons_seq;           /* 184 consistent point: the leg holds every entry
                                       <= cons_seq of generation gen (LBL_CONSISTENT) */
  uint64_t cons_time_ns;       /* 192 CLOCK_REALTIME of entry cons_seq (0 unknown) */
  uint64_t bitmap_since_seq;   /* 200 LBL_BITMAP: the record starts after this seq */
  uint64_t bitmap_gen;         /* 208 LBL_BITMAP: ... of this generation */
  uint64_t written_ns;         /* 216 CLOCK_REALTIME of this write */
  char     writer[64];         /* 224 host name of the writing instance */
  struct lbl_gen hist[LBL_HIST]; /* 288 the generations before gen, newest first */
  uint8_t  reserved[4092 - 288 - 24 * LBL_HIST]; /* 480 zero */
  uint32_t crc;                /* 4092 crc32c of bytes 0..4091 */
};
_Static_assert (sizeof (struct label) == LBL_SIZE, "label is 4096 bytes");
_Static_assert (offsetof (struct label, group) == 24, "group at 24");
_Static_assert (offsetof (struct label, dev_size) == 120, "dev_size at 120");
_Static_assert (offsetof (struct label, gen) == 168, "gen at 168");
_Static_assert (offsetof (struct label, writer) == 224, "writer at 224");
_Static_assert (offsetof (struct label, hist) == 288, "hist at 288");
_Static_assert (offsetof (struct label, crc) == 4092, "crc at 4092");

/* ---- geometry ---- */

/* Bitmap bytes for dev_size at region_size: one bit per region, rounded
 * up to 4096. */
uint64_t lbl_bitmap_bytes (uint64_t dev_size, uint32_t region_size);
/* The end area for a device of dev_size: LBL_COPIES + bitmap, rounded up
 * to LBL_AREA_ALIGN. */
uint64_t lbl_area_size (uint64_t dev_size, uint32_t region_size);
/* The largest device a leg of leg_size holds with an end label (a
 * multiple of LBL_AREA_ALIGN below leg_size - area): 0 if none. */
uint64_t lbl_dev_size_for_leg (uint64_t leg_size, uint32_t region_size);
/* Offset of copy A: leg_size - LBL_COPIES for an end label, 0 for a file. */
uint64_t lbl_base_end (uint64_t leg_size);

/* ---- reading and writing ---- */

/* A leg or label file as label I/O sees it: whole-buffer reads and writes
 * (0 or -errno), and a flush that makes them durable. */
struct lbl_io {
  void *opaque;
  int (*pread) (void *opaque, void *buf, uint32_t len, uint64_t off);
  int (*pwrite) (void *opaque, const void *buf, uint32_t len, uint64_t off);
  int (*flush) (void *opaque);
};

enum lbl_found {
  LBL_FOUND,                   /* at least one valid copy */
  LBL_BLANK,                   /* both copies all zero bytes: no label yet */
  LBL_NONBLANK,                /* no valid copy and not blank: data or damage */
};

/* A copy passes: magic, version, size, checksum, nhist <= LBL_HIST, gen
 * != 0, counter < 2^63, the name and writer NUL-terminated, no history id
 * 0, the geometry consistent (bitmap_bytes a multiple of 4096, a region
 * size when there is a bitmap; for an end label the area a multiple of
 * LBL_AREA_ALIGN holding both copies and the bitmap). */
bool lbl_copy_valid (const struct label *c);
/* Decide from both copies (8192 bytes, A then B): *out = the valid copy
 * with the higher counter (a copy counts only in its own slot, counter &
 * 1); *other_bad when exactly one copy counts and the other was written
 * once (it holds something, or the valid copy's counter is above 1). */
enum lbl_found lbl_decode (const void *copies, struct label *out, bool *other_bad);
/* Read both copies at base (offset of copy A) and decode: 0 or -errno
 * (read failed; one line in err). */
int lbl_read (const struct lbl_io *io, uint64_t base, struct label *out,
              enum lbl_found *found, bool *other_bad, char *err, size_t errlen);
/* Compute the checksum of l (after setting counter, written_ns, writer). */
void lbl_seal (struct label *l);
/* Write l: magic, version, size, counter + 1, written_ns and writer set,
 * reserved zeroed, sealed, written to copy (counter & 1) at base, then
 * flushed.  0 or -errno (one line in err); -EINVAL, nothing written, if l
 * would not be a valid copy.  On failure l->counter is as before, so a
 * retry goes to the same slot, never over the newest good copy. */
int lbl_write (const struct lbl_io *io, uint64_t base, struct label *l,
               char *err, size_t errlen);

/* ---- identity ---- */

/* What this instance is for one device: compared with a leg's label. */
struct lbl_self {
  uint8_t group[16], device[16];
  uint64_t gen;
  unsigned nhist;
  struct lbl_gen hist[LBL_HIST];  /* newest first */
};

enum lbl_class {
  LC_NEW,          /* no label, blank area: a new leg (initial sync) */
  LC_NOT_BLANK,    /* no valid label, the area holds data: refused, never written */
  LC_FOREIGN,      /* a label of another group or device: refused, never written */
  LC_SAME,         /* our generation: continue from the log or the dirty log */
  LC_OLDER,        /* a generation in our history: resync what changed since */
  LC_NEWER,        /* it knows our generation, we do not know its: we were
                      failed over; never written, not a primary without override */
  LC_SPLIT,        /* each side has a generation the other lacks: split brain */
};
const char *lbl_class_name (enum lbl_class c);
/* Classify a leg's label against self.  *common (may be NULL) gets the
 * newest generation both know, with the end seq as the side that moved on
 * recorded it (SAME: the current one, end 0; OLDER: from self's history;
 * NEWER: from the label's; SPLIT: the newest generation of self's history
 * that the label's history holds, as self's history records it, or all
 * zero when none is shared; NEW, NOT_BLANK, FOREIGN: all zero). */
enum lbl_class lbl_classify (const struct lbl_self *self, enum lbl_found found,
                             const struct label *l, struct lbl_gen *common);

/* New random UUID (getrandom) and generation id (never 0). */
void lbl_uuid_new (uint8_t u[16]);
uint64_t lbl_gen_new (void);
/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (37 bytes with the NUL). */
void lbl_uuid_str (const uint8_t u[16], char buf[37]);
/* A generation as printed: 16 hex digits. */
void lbl_gen_str (uint64_t gen, char buf[17]);
/* Start a new generation in s: the current one goes to the front of the
 * history (ended at end_seq, end_ns), the oldest falls off (a current
 * generation 0, none yet, is not recorded). */
void lbl_self_new_gen (struct lbl_self *s, uint64_t end_seq, uint64_t end_ns);
/* Fill l's identity fields (group, device, gen, history) from s. */
void lbl_set_self (struct label *l, const struct lbl_self *s);

#endif
