/* journal.h: the agentless journal of a remote leg (issue 16, section 2):
 * its on-disk format, the writer's encoder and ring state, and replay.
 *
 * A remote site reached as a plain NBD server or iSCSI target, with
 * `journal=SIZE`, gets a ring on its remote leg.  The worker groups log
 * epochs into batches; each batch is written as one sequential write into
 * the ring (with a new superblock, one flush covers both), then applied in
 * place and flushed; the next superblock releases it.  Whoever opens the
 * leg replays the ring first: an in-place apply cut by a crash leaves the
 * leg inconsistent until then.
 *
 * Where it lives (label "end" legs only): the leg holds the device's data
 * in [0, dev_size); the block at dev_size is the stream record's
 * (stream.c); the journal starts at
 *     base = align_up (dev_size, 4096) + 4096
 * with superblock copy A at base, copy B at base + 4096 and the ring at
 * base + 8192 (ring_size bytes, a multiple of 4096), all below the label's
 * bitmap (bitmap_offset in the label).  The offline replay finds it from
 * the leg's label alone (dev_size, bitmap_offset): no configuration.
 *
 * Byte tables: below (every offset pinned by a _Static_assert) and in
 * nbd-replicator-replog(5), JOURNAL.  All integers little-endian.
 */
#ifndef REPLICATOR_JOURNAL_H
#define REPLICATOR_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JNL_BLOCK        4096u
#define JNL_SB_MAGIC     "NBDRJSUP"     /* 8 bytes, no NUL stored */
#define JNL_BATCH_MAGIC  "NBDRJBAT"
#define JNL_VERSION      1
#define JNL_SB_COPIES    (2 * JNL_BLOCK)
#define JNL_HDR_SIZE     128u           /* batch header; the entry table follows */
#define JNL_EXT_MAX      (1u << 30)     /* longest extent in an entry */
#define JNL_BATCH_MAX    (1ull << 30)   /* largest max_batch */

/* Entry flags. */
#define JNL_DATA  1u                    /* len bytes of data follow in the data area */
#define JNL_ZERO  2u                    /* len bytes of zeroes: no data */

/* Superblock: one 4096-byte block, two copies (A, B) alternating by gen. */
struct jnl_super {
  char     magic[8];       /*    0 "NBDRJSUP" */
  uint32_t version;        /*    8 JNL_VERSION */
  uint32_t size;           /*   12 4096 */
  uint64_t gen;            /*   16 +1 per write; copy = gen & 1 (0 = A) */
  uint8_t  group[16];      /*   24 group UUID (label / log identity) */
  uint8_t  device[16];     /*   40 device UUID */
  uint64_t jid;            /*   56 journal id: random, new at each format;
                                   batches carry it */
  uint64_t dev_size;       /*   64 device size the journal was made for */
  uint64_t ring_off;       /*   72 byte offset of the ring on the leg */
  uint64_t ring_size;      /*   80 bytes (multiple of 4096) */
  uint64_t max_batch;      /*   88 largest batch (multiple of 4096) */
  uint64_t applied;        /*   96 batches <= applied are applied in place
                                   and flushed (0: none yet) */
  uint64_t tail_off;       /*  104 ring offset of batch applied + 1 */
  uint64_t applied_seq;    /*  112 last log seq of batch applied (0 unknown) */
  uint64_t written_ns;     /*  120 CLOCK_REALTIME of this write */
  uint8_t  reserved[4092 - 128]; /* 128 zero */
  uint32_t crc;            /* 4092 crc32c of bytes 0..4091 */
};
_Static_assert (sizeof (struct jnl_super) == JNL_BLOCK, "superblock is 4096 bytes");
_Static_assert (offsetof (struct jnl_super, jid) == 56, "jid at 56");
_Static_assert (offsetof (struct jnl_super, applied) == 96, "applied at 96");
_Static_assert (offsetof (struct jnl_super, written_ns) == 120, "written_ns at 120");
_Static_assert (offsetof (struct jnl_super, crc) == 4092, "crc at 4092");

/* Batch header, at the batch's start (a multiple of 4096 in the ring). */
struct jnl_batch_hdr {
  char     magic[8];       /*   0 "NBDRJBAT" */
  uint32_t version;        /*   8 JNL_VERSION */
  uint32_t hdr_size;       /*  12 JNL_HDR_SIZE */
  uint8_t  group[16];      /*  16 */
  uint8_t  device[16];     /*  32 */
  uint64_t jid;            /*  48 the superblock's jid */
  uint64_t number;         /*  56 batch number: 1, 2, ... consecutive */
  uint64_t first_seq;      /*  64 first log seq covered */
  uint64_t last_seq;       /*  72 last log seq covered */
  uint32_t nentries;       /*  80 entries in the table */
  uint32_t flags;          /*  84 0 */
  uint64_t data_bytes;     /*  88 bytes in the data area (sum of data entries) */
  uint64_t total_len;      /*  96 whole batch, a multiple of 4096 */
  uint64_t next_off;       /* 104 ring offset of the next batch */
  uint64_t raw_bytes;      /* 112 data bytes before coalescing (information) */
  uint32_t reserved;       /* 120 zero */
  uint32_t crc;            /* 124 crc32c of the whole batch (total_len bytes)
                                  with this field zero */
};
_Static_assert (sizeof (struct jnl_batch_hdr) == JNL_HDR_SIZE, "batch header is 128 bytes");
_Static_assert (offsetof (struct jnl_batch_hdr, number) == 56, "number at 56");
_Static_assert (offsetof (struct jnl_batch_hdr, next_off) == 104, "next_off at 104");
_Static_assert (offsetof (struct jnl_batch_hdr, crc) == 124, "crc at 124");

/* Entry table, right after the header; the data area starts at the next
 * multiple of 4096 after the table and holds the data entries' bytes in
 * table order; zero padding to total_len. */
struct jnl_entry {
  uint64_t off;            /*  0 device offset */
  uint32_t len;            /*  8 bytes (1 .. JNL_EXT_MAX) */
  uint32_t flags;          /* 12 JNL_DATA or JNL_ZERO */
};
_Static_assert (sizeof (struct jnl_entry) == 16, "entry is 16 bytes");

/* ---- geometry ---- */

struct jnl_geom {
  uint64_t sb_off;         /* copy A; copy B at sb_off + 4096 */
  uint64_t ring_off;       /* sb_off + JNL_SB_COPIES */
  uint64_t room;           /* bytes from ring_off to the end of the room */
};
/* The journal's place on a leg whose device ends at dev_size and whose
 * room ends at room_end (the label's bitmap_offset). */
void jnl_geom (uint64_t dev_size, uint64_t room_end, struct jnl_geom *g);
/* Check that a ring of ring_size fits: 0, or -ENOSPC with one line in err
 * naming the bytes missing and the leg size it would need (leg_size: the
 * leg's size now).  ring_size must be a multiple of 4096 and >= 4 blocks. */
int jnl_check_room (uint64_t dev_size, uint64_t room_end, uint64_t leg_size,
                    uint64_t ring_size, char *err, size_t errlen);
/* Where batch bytes end at end_off go next: end_off, or 0 when a batch of
 * max_batch would not fit before the ring's end (deterministic: the
 * writer and replay agree without looking at the next batch). */
uint64_t jnl_next_off (uint64_t end_off, uint64_t ring_size, uint64_t max_batch);

/* ---- synchronous I/O ---- */

/* The leg as the journal sees it: whole-buffer transfers, 0 or -errno.
 * pread/pwrite/flush have struct lbl_io's signatures (label.h). */
struct jnl_io {
  void *opaque;
  int (*pread) (void *opaque, void *buf, uint32_t len, uint64_t off);
  int (*pwrite) (void *opaque, const void *buf, uint32_t len, uint64_t off);
  int (*zero) (void *opaque, uint32_t len, uint64_t off);
  int (*flush) (void *opaque);
};

/* Zeroes written as data, len bytes at off, through pwrite (a leg that
 * cannot zero otherwise).  0 or -errno. */
int jnl_write_zeroes (int (*pwrite) (void *opaque, const void *buf, uint32_t len, uint64_t off),
                      void *opaque, uint32_t len, uint64_t off);

/* ---- superblock ---- */

/* A copy passes: magic, version, size, crc, ring geometry (multiples of
 * 4096, max_batch <= ring_size / 2 and <= JNL_BATCH_MAX, tail_off <
 * ring_size and a multiple of 4096, tail_off + max_batch <= ring_size). */
bool jnl_super_valid (const struct jnl_super *s);
enum jnl_sb_found {
  JNL_SB_OK,               /* at least one valid copy */
  JNL_SB_BLANK,            /* both copies all zero: no journal */
  JNL_SB_BAD,              /* no valid copy and not blank */
};
/* Decide from both copies (A then B): *out = the valid copy with the
 * higher gen (a copy counts only in its own slot, gen & 1). */
enum jnl_sb_found jnl_super_decode (const void *copies, struct jnl_super *out);
/* Seal s (crc) after setting magic, version, size, written_ns. */
void jnl_super_seal (struct jnl_super *s);
/* A new journal's first superblock (gen 0, applied 0, tail 0, a new jid):
 * max_batch 0 = ring_size / 4 (rounded down to 4096, at most JNL_BATCH_MAX). */
void jnl_super_init (struct jnl_super *s, const uint8_t group[16], const uint8_t device[16],
                     uint64_t dev_size, const struct jnl_geom *g, uint64_t ring_size,
                     uint64_t max_batch);
/* Write a new journal: copy A = s (sealed), copy B zeroed, flushed.  Only
 * on a leg whose journal was replayed or is blank: batches of an older
 * jid never count again.  0 or -errno (one line in err). */
int jnl_format (const struct jnl_io *io, struct jnl_super *s, char *err, size_t errlen);

/* ---- the writer's encoder ---- */

struct jnl_enc;                  /* one batch being built */
struct jnl_enc_stats {
  uint64_t in_entries, in_bytes; /* entries added; their data bytes (zeroes: 0) */
  uint64_t out_entries, out_bytes; /* after coalescing: entries; data bytes */
  uint64_t total_len;            /* the batch's length in the ring */
};
struct jnl_enc *jnl_enc_new (void);
void jnl_enc_free (struct jnl_enc *e);
/* Start over (keeps the memory). */
void jnl_enc_reset (struct jnl_enc *e);
/* Add an entry in log order: len bytes at device offset off, data (NULL:
 * zeroes), log seq.  data must stay valid until jnl_enc_finish.  Later
 * entries win over earlier ones byte by byte.  0 or -errno (-EINVAL: len
 * 0 or off + len overflows; -ENOMEM). */
int jnl_enc_add (struct jnl_enc *e, uint64_t off, uint32_t len, const void *data, uint64_t seq);
/* The batch's length if finished now (for jnl_writer_fits). */
uint64_t jnl_enc_length (const struct jnl_enc *e);
/* Build the batch: sorted, merged extents (adjacent extents of the same
 * kind joined up to JNL_EXT_MAX), header filled but for number, next_off
 * and crc (jnl_writer_place seals it).  *buf: 4096-aligned, free(); *len
 * = total_len.  group/device go into the header.  0 or -errno. */
int jnl_enc_finish (struct jnl_enc *e, const uint8_t group[16], const uint8_t device[16],
                    void **buf, uint64_t *len, struct jnl_enc_stats *st);

/* ---- the writer's ring state ----
 * The cycle, one batch at a time through the ring:
 *   jnl_enc_add ... jnl_enc_finish -> jnl_writer_place -> write the batch
 *   and the superblock -> ONE flush -> jnl_writer_flushed -> apply the
 *   batch in place (its writes after the previous batch's in-place writes
 *   completed: overlapping bytes must land in batch order) -> flush ->
 *   jnl_writer_applied; the next place (or jnl_writer_release when idle)
 *   carries the new applied, and its flush releases the space.
 * After a failed write or flush the state is void: reopen the leg
 * (jnl_prepare replays) and start a new writer. */

struct jnl_placed { uint64_t number, off, len, last_seq; };
struct jnl_writer {
  struct jnl_super sb;     /* the last superblock built */
  uint64_t head;           /* ring offset of the next batch */
  uint64_t next_number;    /* its number */
  uint64_t durable_applied;/* applied in the last flushed superblock */
  uint64_t applied;        /* batches <= applied are applied in place and flushed */
  uint64_t applied_seq;    /* last seq of batch applied */
  bool sb_pending;         /* a superblock was built and is not known flushed */
  struct jnl_placed *q;    /* batches durable_applied + 1 .. next_number - 1 */
  size_t nq, capq;
};
/* Start from a valid superblock (after replay or jnl_format).  0, -EINVAL,
 * -ENOMEM (a table of ring_size / 4096 batches). */
int jnl_writer_init (struct jnl_writer *w, const struct jnl_super *sb);
void jnl_writer_destroy (struct jnl_writer *w);
/* Bytes a batch placed now may take: 0 when the ring is full, the
 * free space at the head otherwise (at most max_batch).  Space of batch j
 * is free only once a superblock with applied >= j was flushed. */
uint64_t jnl_writer_free_bytes (const struct jnl_writer *w);
/* A batch of len bytes fits now. */
bool jnl_writer_fits (const struct jnl_writer *w, uint64_t len);
/* Seal batch (from jnl_enc_finish; len bytes) as the next one: number,
 * next_off, crc; build the superblock to write with it into sb_buf (4096
 * bytes, 4096-aligned).  *batch_pos, *sb_pos: leg offsets to write them
 * at; then ONE flush covering both, then jnl_writer_flushed.  -ENOSPC:
 * it does not fit now (wait for releases; -E2BIG: never fits); -EBUSY: the
 * previous superblock is not known flushed. */
int jnl_writer_place (struct jnl_writer *w, void *batch, uint64_t len, void *sb_buf,
                      uint64_t *batch_pos, uint64_t *sb_pos);
/* Only a superblock (releases batches applied since; no batch): write at
 * *sb_pos, flush, jnl_writer_flushed.  -EBUSY as above. */
int jnl_writer_release (struct jnl_writer *w, void *sb_buf, uint64_t *sb_pos);
/* The flush after the last superblock built completed: its applied is
 * durable, the space of those batches is free. */
void jnl_writer_flushed (struct jnl_writer *w);
/* Batch number is applied in place and the leg flushed after it (batches
 * complete in order: number = applied + 1).  -EINVAL otherwise. */
int jnl_writer_applied (struct jnl_writer *w, uint64_t number);

/* ---- replay ---- */

struct jnl_replay_sum {
  uint64_t batches, entries, bytes;     /* applied: data bytes, zeroes counted in bytes too */
  uint64_t first_seq, last_seq;         /* log seqs covered (0 when no batch) */
  uint64_t first_batch, last_batch;
  uint64_t applied_before;              /* the superblock's applied before replay */
};
/* Find the journal through the leg's label (leg_size: the leg's size):
 * *g from the label's dev_size and bitmap_offset; *sb the superblock.
 * Returns 0 (found), 1 (no journal: no label, an external or a blank
 * journal area), or -errno with one line in err (-EINVAL: superblock
 * invalid or of another device; -EIO...: read failed).  Writes nothing. */
int jnl_locate (const struct jnl_io *io, uint64_t leg_size, struct jnl_geom *g,
                struct jnl_super *sb, char *err, size_t errlen);
/* Read the superblock at g (both copies): 0, 1 (blank), -errno (err). */
int jnl_read_super (const struct jnl_io *io, const struct jnl_geom *g, struct jnl_super *sb,
                    char *err, size_t errlen);
/* Replay: follow batches from sb->tail_off numbered applied + 1, ... while
 * valid (magic, version, jid, UUIDs, number, lengths, crc); apply each in
 * order; flush; then write the superblock with the new applied and flush.
 * Nothing written when no batch follows.  *sb updated to what is on disk.
 * 0 or -errno (one line in err). */
int jnl_replay (const struct jnl_io *io, struct jnl_super *sb, struct jnl_replay_sum *sum,
                char *err, size_t errlen);
/* The summary as one line (for a log line or replctl). */
void jnl_replay_str (const struct jnl_replay_sum *sum, char *buf, size_t len);

/* ---- opening a journalled leg ---- */

/* What every opener of a journalled leg does first (the primary's connect
 * hook, a takeover opening the leg): check the room for ring_size (-ENOSPC
 * naming the leg size needed), read the superblock at the place dev_size
 * and room_end (the label's bitmap_offset) give, and
 *   - blank: make a new journal (jnl_format);
 *   - valid, of this group and device and device size: replay it (*sum);
 *     then, when its ring_size differs, make a new journal of ring_size;
 *   - invalid, or another group's, device's or device size's: -EINVAL with
 *     one line in err, nothing written (the leg may hold an apply cut
 *     short that no one can replay: the caller refuses the leg).
 * *sb: the superblock to start the writer from (jnl_writer_init).
 * 0 or -errno (one line in err). */
int jnl_prepare (const struct jnl_io *io, const uint8_t group[16], const uint8_t device[16],
                 uint64_t dev_size, uint64_t room_end, uint64_t leg_size, uint64_t ring_size,
                 struct jnl_super *sb, struct jnl_replay_sum *sum, char *err, size_t errlen);

/* ---- a file or block device ---- */

/* io over an open fd (pread/pwrite, zero by fallocate or writes,
 * fdatasync).  fd stays the caller's. */
void jnl_io_fd (struct jnl_io *io, int *fd);

/* ---- a remote leg's connection ---- */

struct link_ops;
/* A connection of the link layer (link.h) the caller owns: one the
 * worker does not drive (the connector's check hook, a struct rreader),
 * as the synchronous link calls require. */
struct jnl_link {
  const struct link_ops *ops;
  void *conn;
  uint64_t timeout_ns;           /* per request */
};
/* io over it: pread; writes and zeroes by pwrite_durable (each durable on
 * return: FUA, or a write then a flush), so flush does nothing.  iSCSI:
 * whole blocks only, as the link requires. */
void jnl_io_link (struct jnl_io *io, struct jnl_link *k);

#endif
